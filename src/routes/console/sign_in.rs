//! Signing in: `GET /console/sign_in` (the form), `POST /console/sign_in` (emails a single-use
//! link to every operator with that address; the answer never says whether one exists),
//! `GET /console/auth?token=…` (asks to confirm, so link scanners cannot use the link),
//! `POST /console/auth` (uses the link once and starts a session: an `HttpOnly`,
//! `SameSite=Strict` cookie, `Secure` except on loopback), and `POST /console/sign_out`.

use worker::Request;

use super::{esc, page, page_shell, see_other};
use crate::app::{operators, Ctx};
use crate::domain::address::EmailAddress;
use crate::http::{ApiResult, Reply};
use crate::routes::Input;
use crate::store::{accounts, operators as store_ops};

fn form(note: &str) -> String {
    page_shell(
        "Sign in to the MultiMail console",
        &format!(
            "{note}<p>Operators sign in with a link sent to their email address. The link works once, for 10 minutes.</p>\
             <form method=\"post\" action=\"/console/sign_in\"><label for=\"email\">Email address</label>\
             <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required maxlength=\"254\">\
             <p><button type=\"submit\">Email me a sign-in link</button></p></form>"
        ),
    )
}

pub async fn sign_in_page(_ctx: &Ctx) -> ApiResult<Reply> {
    Ok(page(form("")))
}

pub async fn request_link(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    let given = input.form_value("email").unwrap_or("").trim().to_string();
    let Ok(address) = EmailAddress::parse(&given) else {
        let html = form("<p class=\"notice\" role=\"alert\">That is not an email address.</p>");
        return Ok(Reply::raw(400, html, vec![]));
    };
    let email = address.to_string().to_ascii_lowercase();
    for op in store_ops::everywhere(&ctx.db, &email).await? {
        if store_ops::link_sent_since(&ctx.db, &op.id, ctx.now - 60_000, ctx.now).await? {
            continue;
        }
        if let Some(account) = accounts::get(&ctx.db, &op.account_id).await? {
            operators::email_sign_in_link(ctx, &account, &op).await?;
        }
    }
    // The same answer whether or not the address belongs to an operator.
    Ok(page(page_shell(
        "Check your email",
        &format!("<p role=\"status\">If <strong>{}</strong> belongs to an operator, a sign-in link is on its way. It works once, for 10 minutes.</p>", esc(&email)),
    )))
}

fn token_of(req: &Request) -> Option<String> {
    req.url().ok()?.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

fn unusable() -> Reply {
    let html = page_shell(
        "This sign-in link cannot be used",
        "<p>It was used already, it expired (links last 10 minutes), or it was altered.</p><p><a href=\"/console/sign_in\">Ask for a new link</a></p>",
    );
    Reply::raw(410, html, vec![])
}

/// The page behind the emailed link: one button that signs in.
pub async fn auth_page(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let Some(token) = token_of(req).filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())) else { return Ok(unusable()) };
    if !store_ops::sign_in_link_usable(&ctx.db, &operators::token_hash(&token), ctx.now).await? {
        return Ok(unusable());
    }
    Ok(page(page_shell(
        "Sign in to the MultiMail console",
        &format!(
            "<form method=\"post\" action=\"/console/auth\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
             <p><button type=\"submit\">Sign in</button></p></form>",
            esc(&token)
        ),
    )))
}

/// Uses the link and starts the session.
pub async fn auth(ctx: &Ctx, req: &Request, input: &Input) -> ApiResult<Reply> {
    let token = input.form_value("token").unwrap_or("");
    if token.len() != 64 {
        return Ok(unusable());
    }
    let Some(op) = store_ops::use_sign_in_link(&ctx.db, &operators::token_hash(token), ctx.now).await? else { return Ok(unusable()) };
    let ua = req.headers().get("User-Agent").ok().flatten();
    let session = operators::start_session(ctx, &op, ua.as_deref()).await?;
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"].iter().any(|p| ctx.config.public_base_url.starts_with(p));
    let cookie = format!(
        "{}={session}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        operators::COOKIE,
        operators::SESSION_TTL_MS / 1000,
        if loopback { "" } else { "; Secure" }
    );
    Ok(Reply::raw(303, String::new(), vec![("Location".into(), "/console".into()), ("Set-Cookie".into(), cookie)]))
}

/// Ends this session and clears the cookie.
pub async fn sign_out(ctx: &Ctx) -> ApiResult<Reply> {
    let h = super::human(ctx);
    store_ops::revoke_session(&ctx.db, &h.operator_id, &h.session_id, ctx.now).await?;
    let mut r = see_other(ctx, "/console/sign_in", "");
    if let Some((_, loc)) = r.headers.iter_mut().find(|(k, _)| k == "Location") {
        *loc = "/console/sign_in".into();
    }
    r.headers.push(("Set-Cookie".into(), format!("{}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0", operators::COOKIE)));
    Ok(r)
}
