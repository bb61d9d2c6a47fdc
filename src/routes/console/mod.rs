//! The console at `/console`: the pages humans use — sign in with an emailed link, the pending
//! queue with approve and reject, one message in full, mailboxes, API keys (oversight keys
//! included), the test-mode sandbox, the audit log, webhooks, operators and sessions. Server-
//! rendered HTML with no script; every form carries the session's CSRF token (checked by the
//! router) and goes through the same app layer as the API, audited with the operator as actor.
//! This file holds what the pages share: the layout, escaping, forms and redirects.

pub mod queue;
pub mod records;
pub mod settings;
pub mod sign_in;

use crate::app::Ctx;
use crate::domain::time::to_rfc3339;
use crate::http::auth::Human;
use crate::http::Reply;

pub use crate::http::esc;

const STYLE: &str = "\
*{box-sizing:border-box}body{font:16px/1.5 system-ui,-apple-system,sans-serif;margin:0;color:#1a1a1a;background:#fff}\
a{color:#0b57d0}a:focus,button:focus,input:focus,select:focus,textarea:focus,summary:focus{outline:3px solid #0b57d0;outline-offset:2px}\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}\
header{background:#f1f3f6;border-bottom:1px solid #c4c7cc;padding:.75rem 1rem}\
header .brand{font-weight:700;margin:0 0 .25rem}\
nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:.25rem 1rem;margin:0;padding:0}\
nav a[aria-current=page]{font-weight:700;text-decoration:none;color:#1a1a1a}\
.who{margin:.5rem 0 0;font-size:.9rem;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}\
.mode{font-weight:700;padding:0 .4rem;border-radius:.25rem;background:#1a1a1a;color:#fff}.mode.test{background:#7a4b00}\
main{padding:1rem;max-width:70rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}th,td{text-align:left;vertical-align:top;padding:.4rem;border-bottom:1px solid #c4c7cc}\
.table{overflow-x:auto}\
pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.75rem;border:1px solid #c4c7cc}\
button{font:inherit;padding:.35rem .9rem;border:1px solid #0b57d0;background:#0b57d0;color:#fff;border-radius:.25rem;cursor:pointer}\
button.reject,button.danger{background:#a50e0e;border-color:#a50e0e}button.plain{background:#fff;color:#0b57d0}\
input,select,textarea{font:inherit;padding:.3rem;border:1px solid #6b6f76;border-radius:.25rem;max-width:100%}\
label{display:block;margin:.25rem 0}.inline{display:inline-flex;flex-wrap:wrap;gap:.4rem;align-items:end;margin:.2rem 0}\
.notice{padding:.6rem;border:1px solid #1e6b2e;background:#e9f5ec}.secret{font:1rem monospace;word-break:break-all;background:#fff8e1;padding:.6rem;border:1px solid #7a4b00}\
iframe{width:100%;min-height:16rem;border:1px solid #c4c7cc;background:#fff}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{font-weight:700}dd{margin:0;word-break:break-word}\
@media (max-width:40rem){dl{grid-template-columns:1fr}th,td{padding:.3rem}}";

/// A whole page with no console chrome (sign-in, errors).
pub fn page_shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · MultiMail</title><style>{STYLE}</style></head><body><main id=\"main\"><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// The console pages, for the navigation.
const NAV: [(&str, &str); 9] = [
    ("/console", "Pending"),
    ("/console/search", "Search"),
    ("/console/mailboxes", "Mailboxes"),
    ("/console/keys", "API keys"),
    ("/console/sandbox", "Sandbox"),
    ("/console/audit", "Audit log"),
    ("/console/webhooks", "Webhooks"),
    ("/console/operators", "Operators"),
    ("/console/sessions", "Sessions"),
];

/// The operator acting (the router only serves console pages to a signed-in operator).
pub fn human(ctx: &Ctx) -> &Human {
    ctx.principal().human.as_ref().expect("console routes have an operator")
}

/// `?mode=test` on links while the console shows test mail.
pub fn mode_query(ctx: &Ctx) -> &'static str {
    if ctx.principal().livemode { "" } else { "?mode=test" }
}

/// A console page: navigation, who is signed in, the live/test switch, sign-out.
pub fn layout(ctx: &Ctx, current: &str, title: &str, body: &str) -> String {
    let h = human(ctx);
    let live = ctx.principal().livemode;
    let q = mode_query(ctx);
    let nav: String = NAV
        .iter()
        .map(|(href, name)| {
            let cur = if *href == current { " aria-current=\"page\"" } else { "" };
            format!("<li><a href=\"{href}{q}\"{cur}>{name}</a></li>")
        })
        .collect();
    let (mode_label, switch_href, switch_text) = if live {
        ("live", format!("{current}?mode=test"), "Switch to test mode")
    } else {
        ("test", current.to_string(), "Switch to live mode")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · MultiMail console</title><style>{STYLE}</style></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><p class=\"brand\">MultiMail console</p><nav aria-label=\"Console\"><ul>{nav}</ul></nav>\
         <div class=\"who\"><span>Signed in as {email} ({role})</span>\
         <span>Showing <span class=\"mode {mode_label}\">{mode_label}</span> mail</span> <a href=\"{switch_href}\">{switch_text}</a>\
         <form method=\"post\" action=\"/console/sign_out\">{hidden}<button type=\"submit\" class=\"plain\">Sign out</button></form></div></header>\
         <main id=\"main\"><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        email = esc(&h.email),
        role = h.role.as_str(),
        hidden = hidden(ctx),
    )
}

/// The hidden fields every console form carries: the CSRF token and the live/test switch.
pub fn hidden(ctx: &Ctx) -> String {
    let mode = if ctx.principal().livemode { "live" } else { "test" };
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"mode\" value=\"{mode}\">",
        esc(&human(ctx).csrf)
    )
}

/// 200 with a page.
pub fn page(html: String) -> Reply {
    Reply::raw(200, html, vec![])
}

/// 303 to `path` (after a form), keeping the mode, with a one-line note for the next page.
pub fn see_other(ctx: &Ctx, path: &str, note: &str) -> Reply {
    let mut url = worker::Url::parse(&format!("http://console{path}")).expect("our own path");
    if !ctx.principal().livemode {
        url.query_pairs_mut().append_pair("mode", "test");
    }
    if !note.is_empty() {
        url.query_pairs_mut().append_pair("note", note);
    }
    let location = format!("{}{}", url.path(), url.query().map(|q| format!("?{q}")).unwrap_or_default());
    Reply::raw(303, String::new(), vec![("Location".into(), location)])
}

/// The note a redirect left, shown once as a status message.
pub fn note(req: &worker::Request) -> String {
    let note = req.url().ok().and_then(|u| u.query_pairs().find(|(k, _)| k == "note").map(|(_, v)| v.into_owned()));
    match note {
        Some(n) if !n.is_empty() => format!("<p class=\"notice\" role=\"status\">{}</p>", esc(&n.chars().take(300).collect::<String>())),
        _ => String::new(),
    }
}

pub fn time(ms: i64) -> String {
    format!("<time datetime=\"{t}\">{t}</time>", t = to_rfc3339(ms))
}

pub fn opt_time(ms: Option<i64>) -> String {
    ms.map(time).unwrap_or_else(|| "—".into())
}

/// The HTML of an email, shown in a frame with no permissions: no script, no forms, no
/// navigation, under the page's own Content-Security-Policy too.
pub fn html_frame(html: &str, title: &str) -> String {
    format!("<iframe sandbox=\"\" referrerpolicy=\"no-referrer\" title=\"{}\" srcdoc=\"{}\"></iframe>", esc(title), esc(html))
}

/// Approve and reject forms for a held message or a change, each with its own reason field.
pub fn decide_forms(ctx: &Ctx, id: &str, return_to: &str) -> String {
    let hid = hidden(ctx);
    let id_e = esc(id);
    format!(
        "<form method=\"post\" action=\"/console/decide\" class=\"inline\">{hid}<input type=\"hidden\" name=\"id\" value=\"{id_e}\">\
         <input type=\"hidden\" name=\"return_to\" value=\"{rt}\">\
         <label for=\"reason-{id_e}\">Reason (optional)</label><input id=\"reason-{id_e}\" name=\"reason\" maxlength=\"1000\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"reject\" class=\"reject\">Reject</button></form>",
        rt = esc(return_to),
    )
}
