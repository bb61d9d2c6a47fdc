//! Settings a human owns: `GET /console/mailboxes` with `POST /console/update_mailbox` (mode,
//! oversight address, TTL, scan, AI disclosure, allow-list bypass: a human's change applies at
//! once), the recipient and sender rules (`POST /console/add_rule`, `POST /console/remove_rule`), `GET /console/keys` with
//! `POST /console/create_key` (oversight keys included; the secret is shown once, on the page
//! that answers the form) and `POST /console/revoke_key`, `GET /console/operators` with
//! `POST /console/invite_operator` and `POST /console/remove_operator`, and
//! `GET /console/sessions` with `POST /console/revoke_session`.

use serde_json::{json, Value};
use worker::Request;

use super::{esc, hidden, human, layout, note, page, see_other, time};
use crate::app::keys::{self, NewKey};
use crate::app::{access, mailboxes, operators, Ctx};
use crate::domain::address::EmailAddress;
use crate::domain::authority::{self, Role};
use crate::domain::keys::{Scope, Scopes};
use crate::domain::disclosure::AiDisclosure;
use crate::domain::scan::ScanPolicy;
use crate::domain::oversight::{parse_ttl, OversightMode};
use crate::http::{ApiError, ApiResult, Reply};
use crate::routes::Input;
use crate::store::{keys as store_keys, mailboxes as store_mb, operators as store_ops, rules as store_rules};

fn owner_only(ctx: &Ctx) -> ApiResult<()> {
    authority::may_manage_operators(ctx.principal().actor()).map_err(Into::into)
}

pub async fn mailboxes(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let rows = store_mb::list(&ctx.db, &p.account_id, None, None, 100).await?;
    let owner = owner_only(ctx).is_ok();
    let decider = authority::may_pause(p.actor()).is_ok();
    let mut body = note(req);
    body.push_str("<p>Mailboxes serve live and test mail alike. Without an oversight address, approval requests go to the account owner.</p>");
    // The kill switch: the whole account, then each mailbox below.
    let account_paused = crate::store::accounts::get(&ctx.db, &p.account_id).await?.and_then(|a| a.paused_at);
    body.push_str(&format!(
        "<section aria-labelledby=\"h-pause\"><h2 id=\"h-pause\">Sending</h2><p>{}</p>{}</section>",
        match account_paused {
            Some(at) => format!("<strong>All sending is paused</strong> since {}. Messages wait until you resume.", time(at)),
            None => "Sending runs. Pausing stops every new and queued message of this account at once, in both modes, until a human resumes.".into(),
        },
        if decider { pause_form(ctx, None, account_paused.is_some(), "the whole account") } else { String::new() }
    ));
    if rows.is_empty() {
        body.push_str("<p>No mailboxes yet.</p>");
    }
    for m in &rows {
        let id = esc(&m.id);
        body.push_str(&format!(
            "<section aria-labelledby=\"h-{id}\"><h2 id=\"h-{id}\">{addr}</h2><dl><dt>Mode</dt><dd>{mode}</dd><dt>Oversight address</dt><dd>{ov}</dd><dt>Approval TTL</dt><dd>{ttl} s</dd><dt>Pre-send scan</dt><dd>{scan}</dd><dt>Sending</dt><dd>{sending}</dd></dl>",
            addr = esc(&m.address), mode = m.oversight_mode, ov = esc(m.oversight_email.as_deref().unwrap_or("the account owner")), ttl = m.approval_ttl_secs, scan = m.scan,
            sending = m.paused_at.map_or_else(|| "runs".to_string(), |at| format!("paused since {}", time(at))),
        ));
        if decider {
            body.push_str(&pause_form(ctx, Some(&m.id), m.paused_at.is_some(), &m.address));
        }
        if owner {
            let options: String = OversightMode::ALL
                .iter()
                .map(|o| format!("<option value=\"{v}\"{sel}>{v}</option>", v = o.as_str(), sel = if *o == m.oversight_mode { " selected" } else { "" }))
                .collect();
            let disclosures: String = AiDisclosure::ALL
                .iter()
                .map(|o| format!("<option value=\"{v}\"{sel}>{v}</option>", v = o.as_str(), sel = if *o == m.ai_disclosure { " selected" } else { "" }))
                .collect();
            let scans: String = ScanPolicy::ALL
                .iter()
                .map(|o| format!("<option value=\"{v}\"{sel}>{v}</option>", v = o.as_str(), sel = if *o == m.scan { " selected" } else { "" }))
                .collect();
            body.push_str(&format!(
                "<form method=\"post\" action=\"/console/update_mailbox\" class=\"inline\">{h}<input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <label for=\"mode-{id}\">Mode</label><select id=\"mode-{id}\" name=\"oversight_mode\">{options}</select>\
                 <label for=\"ov-{id}\">Oversight address</label><input id=\"ov-{id}\" name=\"oversight_email\" type=\"email\" value=\"{ov}\" maxlength=\"254\">\
                 <label for=\"ttl-{id}\">Approval TTL (seconds)</label><input id=\"ttl-{id}\" name=\"approval_ttl\" inputmode=\"numeric\" value=\"{ttl}\" size=\"8\">\
                 <label for=\"scan-{id}\">Pre-send scan</label><select id=\"scan-{id}\" name=\"scan\">{scans}</select>\
                 <label for=\"ai-{id}\">AI disclosure</label><select id=\"ai-{id}\" name=\"ai_disclosure\">{disclosures}</select>\
                 <label for=\"bypass-{id}\">Allow-listed mail without a hold</label><select id=\"bypass-{id}\" name=\"allowlist_bypass\">{bypass}</select>\
                 <button type=\"submit\">Save</button></form>",
                h = hidden(ctx), ov = esc(m.oversight_email.as_deref().unwrap_or("")), ttl = m.approval_ttl_secs,
                bypass = [("off", m.allowlist_bypass == 0), ("on", m.allowlist_bypass == 1)].iter()
                    .map(|(v, sel)| format!("<option value=\"{v}\"{}>{v}</option>", if *sel { " selected" } else { "" })).collect::<String>(),
            ));
        }
        body.push_str("</section>");
    }
    body.push_str(&rules_section(ctx, &rows, owner).await?);
    Ok(page(layout(ctx, "/console/mailboxes", "Mailboxes", &body)))
}

/// The account's recipient and sender rules, with the owner's forms to add and remove them.
async fn rules_section(ctx: &Ctx, boxes: &[store_mb::MailboxRow], owner: bool) -> ApiResult<String> {
    let p = ctx.principal();
    let rules = store_rules::list(&ctx.db, &p.account_id, None, None, None, 100).await?;
    let mut out = String::from(
        "<section aria-labelledby=\"h-rules\"><h2 id=\"h-rules\">Recipient and sender rules</h2>\
         <p>A block refuses sends to a recipient, or quarantines mail from a sender, at once. An allow rule lets a mailbox with allow-listed mail without a hold send (or, in <code>gated_all</code>, receive) without waiting for a human.</p>",
    );
    let name = |id: &Option<String>| match id {
        None => "every mailbox".to_string(),
        Some(id) => boxes.iter().find(|b| &b.id == id).map_or_else(|| id.clone(), |b| b.address.clone()),
    };
    if rules.is_empty() {
        out.push_str("<p>No rules.</p>");
    } else {
        out.push_str("<div class=\"table\" tabindex=\"0\"><table><caption class=\"skip\">Rules</caption><thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">Mailbox</th><th scope=\"col\">Added</th><th scope=\"col\"><span class=\"skip\">Remove</span></th></tr></thead><tbody>");
        for r in &rules {
            let what = format!("{} {} {}", r.action, if r.direction == "receive" { "mail from" } else { "sending to" }, r.pattern);
            let remove = if owner {
                format!(
                    "<form method=\"post\" action=\"/console/remove_rule\" class=\"inline\">{h}<input type=\"hidden\" name=\"id\" value=\"{id}\"><button type=\"submit\" aria-label=\"Remove the rule: {w}\">Remove</button></form>",
                    h = hidden(ctx), id = esc(&r.id), w = esc(&what)
                )
            } else {
                String::new()
            };
            out.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{} by {}</td><td>{remove}</td></tr>", esc(&what), esc(&name(&r.mailbox_id)), time(r.created_at), esc(&r.created_by)));
        }
        out.push_str("</tbody></table></div>");
    }
    if owner {
        let options: String = std::iter::once("<option value=\"\">every mailbox</option>".to_string())
            .chain(boxes.iter().map(|b| format!("<option value=\"{}\">{}</option>", esc(&b.id), esc(&b.address))))
            .collect();
        out.push_str(&format!(
            "<form method=\"post\" action=\"/console/add_rule\" class=\"inline\">{h}\
             <label for=\"rule-action\">Action</label><select id=\"rule-action\" name=\"action\"><option value=\"block\">block</option><option value=\"allow\">allow</option></select>\
             <label for=\"rule-direction\">For</label><select id=\"rule-direction\" name=\"direction\"><option value=\"send\">sending to</option><option value=\"receive\">mail from</option></select>\
             <label for=\"rule-pattern\">Address or domain</label><input id=\"rule-pattern\" name=\"pattern\" maxlength=\"254\" required>\
             <label for=\"rule-mailbox\">Mailbox</label><select id=\"rule-mailbox\" name=\"mailbox\">{options}</select>\
             <button type=\"submit\">Add rule</button></form>",
            h = hidden(ctx)
        ));
    }
    out.push_str("</section>");
    Ok(out)
}

/// Adds a rule (an owner's: it applies at once, allow rules included).
pub async fn add_rule(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    owner_only(ctx)?;
    let mut body = json!({
        "action": input.form_value("action").unwrap_or(""),
        "pattern": input.form_value("pattern").unwrap_or(""),
        "direction": input.form_value("direction").filter(|d| !d.is_empty()).unwrap_or("send"),
    });
    if let Some(m) = input.form_value("mailbox").filter(|m| !m.is_empty()) {
        body["mailbox"] = json!(m);
    }
    let reply = crate::app::rules::add_rule(ctx, &body).await?;
    let pattern = reply.body["rule"]["pattern"].as_str().unwrap_or_default().to_string();
    Ok(see_other(ctx, "/console/mailboxes", &format!("Added the rule for {pattern}.")))
}

/// Removes a rule (an owner's removal of a block applies at once).
pub async fn remove_rule(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    owner_only(ctx)?;
    let reply = crate::app::rules::remove_rule(ctx, &json!({"id": input.form_value("id").unwrap_or("")})).await?;
    let pattern = reply.body["pattern"].as_str().unwrap_or_default().to_string();
    Ok(see_other(ctx, "/console/mailboxes", &format!("Removed the rule for {pattern}.")))
}

pub async fn update_mailbox(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    owner_only(ctx)?;
    let id = input.form_value("id").unwrap_or("");
    let mut mailbox = access::visible_mailbox(ctx, id).await?;
    let mode = match input.form_value("oversight_mode").filter(|m| !m.is_empty()) {
        Some(m) => Some(OversightMode::parse(m).ok_or_else(|| ApiError::invalid_field("oversight_mode", "not a mode"))?),
        None => None,
    };
    let email = match input.form_value("oversight_email").map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) => Some(EmailAddress::parse(e).map_err(|x| ApiError::invalid_field("oversight_email", x.0))?.to_string()),
        None => None,
    };
    if let Some(t) = input.form_value("approval_ttl").map(str::trim).filter(|t| !t.is_empty()) {
        let v = t.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(t));
        mailbox.approval_ttl_secs = parse_ttl(&v).map_err(|m| ApiError::invalid_field("approval_ttl", m))?;
    }
    let scan = match input.form_value("scan").filter(|s| !s.is_empty()) {
        Some(s) => Some(ScanPolicy::parse(s).ok_or_else(|| ApiError::invalid_field("scan", "not a scan policy"))?),
        None => None,
    };
    let address = mailbox.address.clone();
    let ai_disclosure = match input.form_value("ai_disclosure").filter(|s| !s.is_empty()) {
        Some(s) => Some(AiDisclosure::parse(s).ok_or_else(|| ApiError::invalid_field("ai_disclosure", "not a disclosure"))?),
        None => None,
    };
    let allowlist_bypass = match input.form_value("allowlist_bypass").filter(|s| !s.is_empty()) {
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(_) => return Err(ApiError::invalid_field("allowlist_bypass", "`on` or `off`")),
        None => None,
    };
    let settings = mailboxes::Settings { mode, oversight_email: email.as_deref(), scan, ai_disclosure, allowlist_bypass };
    mailboxes::update(ctx, mailbox, settings, |_| Reply::ok(Value::Null)).await?;
    Ok(see_other(ctx, "/console/mailboxes", &format!("Saved {address}.")))
}

/// A Pause or Resume button for the account (`mailbox: None`) or one mailbox.
fn pause_form(ctx: &Ctx, mailbox: Option<&str>, paused: bool, what: &str) -> String {
    let field = mailbox.map(|m| format!("<input type=\"hidden\" name=\"mailbox\" value=\"{}\">", esc(m))).unwrap_or_default();
    let (action, label, class) = if paused { ("resume", "Resume sending", "") } else { ("pause", "Pause sending", " class=\"danger\"") };
    format!(
        "<form method=\"post\" action=\"/console/{action}\" class=\"inline\">{h}{field}<button type=\"submit\"{class} aria-label=\"{label}: {what}\">{label}</button></form>",
        h = hidden(ctx), what = esc(what)
    )
}

/// The console's kill switch: pause (any operator who may decide) and resume (the same: a human).
pub async fn pause(ctx: &Ctx, input: &Input, resume: bool) -> ApiResult<Reply> {
    let m = match input.form_value("mailbox").filter(|m| !m.is_empty()) {
        Some(id) => Some(access::visible_mailbox(ctx, id).await?),
        None => None,
    };
    let target = m.as_ref().map_or(crate::app::pause::Target::Account, crate::app::pause::Target::Mailbox);
    let what = m.as_ref().map_or_else(|| "the whole account".to_string(), |m| m.address.clone());
    let note = if resume {
        let done = crate::app::pause::resume(ctx, &target).await?;
        format!("Resumed {what}; {} waiting messages released.", done["released"])
    } else {
        crate::app::pause::pause(ctx, &target, Some("paused in the console")).await?;
        format!("Paused {what}.")
    };
    Ok(see_other(ctx, "/console/mailboxes", &note))
}

pub async fn keys(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let rows = store_keys::list(&ctx.db, &p.account_id, false, None, 100).await?;
    let owner = owner_only(ctx).is_ok();
    let mut body = note(req);
    body.push_str("<p>API keys are what agents and programs hold. Oversight keys decide held mail through the API; only humans make them, here.</p>");
    body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Key</th><th scope=\"col\">Scopes</th><th scope=\"col\">Mode</th><th scope=\"col\">Created</th><th scope=\"col\">Revoke</th></tr></thead><tbody>");
    for k in &rows {
        let revoke = if owner && k.revoked_at.is_none() {
            format!(
                "<form method=\"post\" action=\"/console/revoke_key\">{}<input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\" class=\"danger\" aria-label=\"Revoke {}\">Revoke</button></form>",
                hidden(ctx), esc(&k.id), esc(&k.name)
            )
        } else if k.revoked_at.is_some() {
            "revoked".into()
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td><code>{}…{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{revoke}</td></tr>",
            esc(&k.name), esc(&k.prefix), esc(&k.last4), Scopes::from_csv(&k.scopes).names().join(", "),
            if k.livemode == 1 { "live" } else { "test" }, time(k.created_at),
        ));
    }
    body.push_str("</tbody></table></div>");
    if owner {
        let boxes: String = Scope::ALL
            .iter()
            .map(|s| format!("<label><input type=\"checkbox\" name=\"scope_{v}\" value=\"1\"> {v}</label>", v = s.as_str()))
            .collect();
        body.push_str(&format!(
            "<h2>New key</h2><form method=\"post\" action=\"/console/create_key\">{h}\
             <label for=\"key-name\">Name</label><input id=\"key-name\" name=\"name\" required maxlength=\"100\">\
             <fieldset><legend>Scopes (never both send and oversight)</legend>{boxes}</fieldset>\
             <p>The key is made for <strong>{mode}</strong> mode (switch modes at the top).</p><button type=\"submit\">Create key</button></form>",
            h = hidden(ctx), mode = if p.livemode { "live" } else { "test" },
        ));
    }
    Ok(page(layout(ctx, "/console/keys", "API keys", &body)))
}

pub async fn create_key(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    let p = ctx.principal();
    let name = keys::parse_name(input.form_value("name").unwrap_or(""))?;
    let chosen: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).filter(|s| input.form_value(&format!("scope_{s}")).is_some()).collect();
    let scopes = Scopes::parse(&chosen)?;
    authority::may_mint_key(p.actor(), &scopes)?;
    let reply = keys::create(ctx, NewKey { account_id: &p.account_id, livemode: p.livemode, name, scopes, mailboxes: None }).await?;
    let secret = reply.body.get("key").and_then(Value::as_str).unwrap_or("").to_string();
    let body = format!(
        "<p role=\"status\">Copy the key now: it is shown this once and never again.</p><p class=\"secret\">{}</p><p><a href=\"/console/keys{}\">Back to API keys</a></p>",
        esc(&secret),
        super::mode_query(ctx)
    );
    Ok(page(layout(ctx, "/console/keys", &format!("New key: {name}"), &body)))
}

pub async fn revoke_key(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    owner_only(ctx)?;
    let p = ctx.principal();
    let id = input.form_value("id").unwrap_or("");
    let row = store_keys::revoke(&ctx.db, &p.account_id, id, ctx.now).await?.ok_or_else(|| ApiError::not_found("API key").with_field("id"))?;
    Ok(see_other(ctx, "/console/keys", &format!("Revoked {}.", row.name)))
}

pub async fn operators(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let rows = store_ops::list(&ctx.db, &p.account_id).await?;
    let owner = owner_only(ctx).is_ok();
    let me = &human(ctx).operator_id;
    let mut body = note(req);
    body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">Email</th><th scope=\"col\">Role</th><th scope=\"col\">Since</th><th scope=\"col\">Remove</th></tr></thead><tbody>");
    for o in &rows {
        let remove = if owner && &o.id != me {
            format!("<form method=\"post\" action=\"/console/remove_operator\">{}<input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\" class=\"danger\" aria-label=\"Remove {}\">Remove</button></form>", hidden(ctx), esc(&o.id), esc(&o.email))
        } else {
            String::new()
        };
        body.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{}</td><td>{remove}</td></tr>", esc(&o.email), o.role, time(o.created_at)));
    }
    body.push_str("</tbody></table></div>");
    if owner {
        let roles: String = Role::ALL.iter().map(|r| format!("<option value=\"{v}\">{v}</option>", v = r.as_str())).collect();
        body.push_str(&format!(
            "<h2>Invite an operator</h2><p>They get a sign-in link by email. Approvers decide held mail; viewers look.</p>\
             <form method=\"post\" action=\"/console/invite_operator\" class=\"inline\">{}\
             <label for=\"inv-email\">Email</label><input id=\"inv-email\" name=\"email\" type=\"email\" required maxlength=\"254\">\
             <label for=\"inv-role\">Role</label><select id=\"inv-role\" name=\"role\">{roles}</select><button type=\"submit\">Invite</button></form>",
            hidden(ctx)
        ));
    }
    Ok(page(layout(ctx, "/console/operators", "Operators", &body)))
}

pub async fn invite_operator(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    owner_only(ctx)?;
    let email = EmailAddress::parse(input.form_value("email").unwrap_or("").trim())
        .map_err(|e| ApiError::invalid_field("email", e.0))?
        .to_string()
        .to_ascii_lowercase();
    let role = input.form_value("role").and_then(Role::parse).ok_or_else(|| ApiError::invalid_field("role", "owner, approver or viewer"))?;
    let p = ctx.principal();
    operators::invite(ctx, &p.account_id, &email, role, &human(ctx).operator_id).await?;
    Ok(see_other(ctx, "/console/operators", &format!("Invited {email} as {role}.")))
}

pub async fn remove_operator(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    owner_only(ctx)?;
    let p = ctx.principal();
    let id = input.form_value("id").unwrap_or("");
    if id == human(ctx).operator_id {
        return Err(ApiError::conflict("cannot_remove_self", "an owner cannot remove themselves"));
    }
    if !store_ops::remove(&ctx.db, &p.account_id, id, ctx.now).await? {
        return Err(ApiError::not_found("operator"));
    }
    Ok(see_other(ctx, "/console/operators", "Removed; their sessions ended."))
}

pub async fn sessions(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let h = human(ctx);
    let rows = store_ops::sessions_of(&ctx.db, &h.operator_id, ctx.now).await?;
    let mut body = note(req);
    body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">Started</th><th scope=\"col\">Last seen</th><th scope=\"col\">Browser</th><th scope=\"col\">End</th></tr></thead><tbody>");
    for s in &rows {
        let this = if s.id == h.session_id { " (this one)" } else { "" };
        body.push_str(&format!(
            "<tr><td>{}{this}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/console/revoke_session\">{}<input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\" class=\"danger\" aria-label=\"End the session started {}\">End</button></form></td></tr>",
            time(s.created_at), time(s.last_seen_at), esc(s.user_agent.as_deref().unwrap_or("")), hidden(ctx), esc(&s.id), crate::domain::time::to_rfc3339(s.created_at),
        ));
    }
    body.push_str("</tbody></table></div>");
    Ok(page(layout(ctx, "/console/sessions", "Your sessions", &body)))
}

pub async fn revoke_session(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    let h = human(ctx);
    let id = input.form_value("id").unwrap_or("");
    if !store_ops::revoke_session(&ctx.db, &h.operator_id, id, ctx.now).await? {
        return Err(ApiError::not_found("session"));
    }
    Ok(see_other(ctx, "/console/sessions", "Session ended."))
}
