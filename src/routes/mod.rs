//! The route table and the path of every request: find the route, authenticate, read the body
//! the route declares, go through idempotency (every route that declares it), run the handler,
//! answer with a request id. `ROUTES` says how each route is served (access, body, answer,
//! idempotency), so nothing below compares paths; it is also what the OpenAPI document is
//! checked against.

pub mod admin;
pub mod audit;
pub mod console;
pub mod domains;
pub mod emails;
pub mod health;
pub mod identity;
pub mod inbound;
pub mod inbox;
pub mod keys;
pub mod mailboxes;
pub mod mcp;
pub mod oversight;
pub mod provider_events;
pub mod review;
pub mod rules;
pub mod send;
pub mod suppressions;
pub mod webhooks;

use crate::store::Db;
use std::time::Duration;

use serde_json::Value;
use worker::{Env, Request, Response};

use crate::app::{self, Ctx};
use crate::domain::idempotency::{self, IdempotencyKey, Replay};
use crate::domain::keys::Scope;
use crate::http::auth;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform::{self, Config};
use crate::store::{self, idempotency as idem_store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// The deployment operator's `ADMIN_TOKEN`.
    Deployment,
    /// An API key holding any one of these scopes.
    Key(&'static [Scope]),
    /// An operator (a human) signed in to the console: its session cookie, and on every form
    /// the session's CSRF token.
    Console,
}

/// What the router reads from the request before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Nothing (GET).
    None,
    /// A JSON object: `Content-Type: application/json`, at most `http::MAX_BODY_BYTES`.
    Json,
    /// An HTML form (`application/x-www-form-urlencoded`) posted by one of our pages.
    Form,
    /// Nothing: the handler reads the request itself, after its own checks (a webhook's own
    /// authentication and format, a raw MIME message).
    Raw,
}

/// What the answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// JSON (the contract's bodies and errors).
    Json,
    /// A page for a person: served with a strict Content-Security-Policy, never framed.
    Html,
}

#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub body: Body,
    pub answer: Answer,
    /// An `Idempotency-Key` (header or body) makes a repeat replay the stored answer.
    pub idempotent: bool,
    /// About the whole account (its audit chain, domains, suppression list): a key limited to
    /// some mailboxes is refused (403 `mailbox_limited_key`).
    pub account_wide: bool,
    /// Reads the handler will make, run in the key's lookup batch (`app::Prefetcher`).
    pub prefetch: Option<app::Prefetcher>,
    /// A keyed `POST` is audited (`false` only for `/mcp`, whose tool calls are audited each).
    pub audited: bool,
    /// The largest JSON body it reads. Bodies over `http::MAX_BODY_BYTES` are read only after
    /// the key is authenticated.
    pub max_body: usize,
}

const fn get(path: &'static str, access: Access) -> Route {
    Route { method: "GET", path, access, body: Body::None, answer: Answer::Json, idempotent: false, account_wide: false, prefetch: None, audited: true, max_body: http::MAX_BODY_BYTES }
}

/// A POST takes a JSON body; a keyed one is idempotent.
const fn post(path: &'static str, access: Access) -> Route {
    let idempotent = matches!(access, Access::Key(_));
    Route { method: "POST", path, access, body: Body::Json, answer: Answer::Json, idempotent, account_wide: false, prefetch: None, audited: true, max_body: http::MAX_BODY_BYTES }
}

impl Route {
    /// Takes a JSON body of up to `http::MAX_SEND_BODY_BYTES` (a message with 25 MB of attachments).
    const fn large_body(self) -> Route {
        Route { max_body: http::MAX_SEND_BODY_BYTES, ..self }
    }
    const fn raw(self) -> Route {
        Route { body: Body::Raw, ..self }
    }
    const fn form(self) -> Route {
        Route { body: Body::Form, ..self }
    }
    const fn account_wide(self) -> Route {
        Route { account_wide: true, ..self }
    }
    const fn prefetch(self, f: app::Prefetcher) -> Route {
        Route { prefetch: Some(f), ..self }
    }
    const fn unaudited(self) -> Route {
        Route { audited: false, ..self }
    }
    const fn html(self) -> Route {
        Route { answer: Answer::Html, ..self }
    }
    /// Not idempotent by key: a body that is not JSON has no fingerprint to compare, and the
    /// call is idempotent by nature (a repeated Message-ID is stored once).
    const fn without_idempotency(self) -> Route {
        Route { idempotent: false, ..self }
    }
}

use Access::{Console, Deployment, Key, Public};
const READ: &[Scope] = &[Scope::Read];
const SEND: &[Scope] = &[Scope::Send];
const ADMIN: &[Scope] = &[Scope::Admin];
const READ_OR_ADMIN: &[Scope] = &[Scope::Read, Scope::Admin];
const READ_SEND_OR_OVERSIGHT: &[Scope] = &[Scope::Read, Scope::Send, Scope::Oversight];
const OVERSIGHT: &[Scope] = &[Scope::Oversight];
const READ_OR_OVERSIGHT: &[Scope] = &[Scope::Read, Scope::Oversight];
const ANY_SCOPE: &[Scope] = &[Scope::Read, Scope::Send, Scope::Oversight, Scope::Admin];

pub const ROUTES: &[Route] = &[
    get("/healthz", Public),
    get("/openapi.json", Public),
    get("/.well-known/jwks.json", Public),
    get("/verify_identity", Public),
    post("/admin/create_account", Deployment),
    post("/admin/create_api_key", Deployment),
    post("/admin/create_sign_in_link", Deployment),
    post("/create_api_key", Key(ADMIN)),
    get("/list_api_keys", Key(ADMIN)),
    post("/revoke_api_key", Key(ADMIN)),
    post("/create_mailbox", Key(ADMIN)),
    get("/list_mailboxes", Key(READ_OR_ADMIN)),
    post("/update_mailbox", Key(ADMIN)),
    post("/delete_mailbox", Key(ADMIN)),
    post("/send_email", Key(SEND)).prefetch(app::outbound::prefetch_send).large_body(),
    post("/send_batch", Key(SEND)),
    post("/cancel_email", Key(SEND)),
    get("/get_email", Key(READ_SEND_OR_OVERSIGHT)),
    get("/check_inbox", Key(READ)),
    get("/search_emails", Key(READ)),
    get("/download_attachment", Key(READ)),
    get("/read_email", Key(READ)),
    get("/get_thread", Key(READ)),
    post("/tag_email", Key(SEND)),
    post("/reply_email", Key(SEND)),
    post("/inbound/postmark", Public).raw(),
    post("/inbound/mime", Key(ADMIN)).raw().without_idempotency(),
    post("/provider_events/postmark", Public).raw(),
    post("/provider_events/resend", Public).raw(),
    post("/decide_email", Key(OVERSIGHT)),
    get("/list_pending", Key(READ_OR_OVERSIGHT)),
    post("/pause", Key(OVERSIGHT)),
    post("/resume", Key(OVERSIGHT)),
    get("/review", Public).html(),
    post("/review", Public).form().html(),
    get("/list_suppressions", Key(ADMIN)).account_wide(),
    post("/add_suppression", Key(ADMIN)).account_wide(),
    post("/remove_suppression", Key(ADMIN)).account_wide(),
    get("/list_rules", Key(READ_OR_ADMIN)),
    post("/add_rule", Key(ADMIN)),
    post("/remove_rule", Key(ADMIN)),
    get("/unsubscribe/{token}", Public).html(),
    post("/unsubscribe/{token}", Public).form().html(),
    post("/create_domain", Key(ADMIN)).account_wide(),
    post("/verify_domain", Key(ADMIN)).account_wide(),
    get("/list_domains", Key(ADMIN)).account_wide(),
    post("/delete_domain", Key(ADMIN)).account_wide(),
    get("/get_audit_log", Key(ADMIN)).account_wide(),
    get("/verify_audit_log", Key(ADMIN)).account_wide(),
    get("/export_audit_log", Key(ADMIN)).account_wide(),
    post("/create_webhook", Key(ADMIN)),
    get("/list_webhooks", Key(ADMIN)),
    post("/delete_webhook", Key(ADMIN)),
    post("/rotate_webhook_secret", Key(ADMIN)),
    get("/list_webhook_deliveries", Key(ADMIN)),
    get("/console/sign_in", Public).html(),
    post("/console/sign_in", Public).form().html(),
    get("/console/auth", Public).html(),
    post("/console/auth", Public).form().html(),
    post("/console/sign_out", Console).form().html(),
    get("/console", Console).html(),
    get("/console/message", Console).html(),
    // A download, not a page: its errors are JSON.
    get("/console/attachment", Console),
    post("/console/decide", Console).form().html(),
    get("/console/mailboxes", Console).html(),
    post("/console/update_mailbox", Console).form().html(),
    post("/console/pause", Console).form().html(),
    post("/console/resume", Console).form().html(),
    post("/console/add_rule", Console).form().html(),
    post("/console/remove_rule", Console).form().html(),
    get("/console/keys", Console).html(),
    post("/console/create_key", Console).form().html(),
    post("/console/revoke_key", Console).form().html(),
    get("/console/sandbox", Console).html(),
    get("/console/search", Console).html(),
    get("/console/audit", Console).html(),
    get("/console/webhooks", Console).html(),
    get("/console/operators", Console).html(),
    post("/console/invite_operator", Console).form().html(),
    post("/console/remove_operator", Console).form().html(),
    get("/console/sessions", Console).html(),
    post("/console/revoke_session", Console).form().html(),
    // MCP (Streamable HTTP): JSON-RPC in the body; each tool call runs the route it names.
    post("/mcp", Key(ANY_SCOPE)).raw().without_idempotency().unaudited(),
];

/// What the router read from the request, as the route declared.
pub enum Input {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

impl Input {
    /// The JSON body (`null` for routes without one).
    pub fn json(&self) -> &Value {
        match self {
            Input::Json(v) => v,
            _ => &Value::Null,
        }
    }
    /// The form's value of `name`, if posted.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        match self {
            Input::Form(pairs) => pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// The headers every HTML page is served with.
const HTML_HEADERS: [(&str, &str); 4] = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
];

struct Served {
    status: u16,
    body: String,
    /// A binary body (then `body` is empty).
    bytes: Option<http::Binary>,
    headers: Vec<(String, String)>,
    json: Option<Value>,
    /// The handler stored the call's audit entry with its own batch.
    audited: bool,
}

impl Served {
    fn from_reply(r: Reply, answer: Answer) -> Self {
        let mut headers = r.headers;
        if answer == Answer::Html {
            headers.extend(HTML_HEADERS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
        match (r.raw, r.bytes) {
            (_, Some(bytes)) => Served { status: r.status, body: String::new(), bytes: Some(bytes), headers, json: None, audited: false },
            (Some(raw), None) => Served { status: r.status, body: raw, bytes: None, headers, json: None, audited: false },
            (None, None) => Served { status: r.status, body: r.body.to_string(), bytes: None, headers, json: Some(r.body), audited: false },
        }
    }
}

pub async fn handle(mut req: Request, env: Env, wctx: worker::Context) -> worker::Result<Response> {
    let started = worker::js_sys::Date::now();
    let request_id = platform::new_id(crate::domain::ids::REQUEST);
    let mut facts: Option<app::audit::Facts> = None;
    let mut page: Option<&'static Route> = None;
    let db = store::db(&env)?;
    let cost = db.cost().clone();
    let result = serve(&mut req, env.clone(), db, &request_id, &mut facts, &mut page, None).await;
    if let Some(f) = unrecorded_facts(facts, &result) {
        // Recorded after the answer, within this invocation (one D1 write).
        let env = env.clone();
        wctx.wait_until(async move { app::audit::record(&env, f).await });
    }
    // A page for a person answers its errors as a page too (and an expired console session
    // with the sign-in page).
    let result = match (result, page) {
        (Err(e), Some(route)) => Ok(error_page(&e, route)),
        (r, _) => r,
    };
    let timing = ("Server-Timing".to_string(), server_timing(&cost, worker::js_sys::Date::now() - started));
    match result {
        Ok(mut s) => {
            s.headers.push(timing);
            match s.bytes {
                Some(b) => http::binary_response(s.status, b, &request_id, &s.headers),
                None => http::json_response(s.status, s.body.as_bytes(), &request_id, &s.headers),
            }
        }
        Err(e) => {
            if e.status >= 500 {
                worker::console_error!("{request_id}: {} {}", e.status, e.code);
            }
            http::error_response(&e, &request_id, Some(timing))
        }
    }
}

/// The audit facts of a finished call, completed with its outcome; `None` when it is not
/// audited or its handler already stored the entry with its own batch. Every authenticated
/// state-changing call is audited, refused ones included.
fn unrecorded_facts(facts: Option<app::audit::Facts>, result: &ApiResult<Served>) -> Option<app::audit::Facts> {
    let mut f = facts?;
    match result {
        Ok(s) if s.audited => return None,
        Ok(s) => {
            let replayed = s.headers.iter().any(|(k, _)| k == "Idempotent-Replayed");
            let answer = s.json.clone().or_else(|| serde_json::from_str(&s.body).ok());
            app::audit::answered(&mut f, s.status, answer.as_ref(), replayed);
        }
        Err(e) => {
            f.outcome = e.code.to_string();
            f.status = Some(i64::from(e.status));
            f.detail = Some(e.message.chars().take(300).collect());
        }
    }
    Some(f)
}

/// An answer from `call_internal`: the status, the body as text and its headers.
pub struct Internal {
    pub status: u16,
    pub body: String,
    /// A binary answer (a downloaded attachment).
    pub bytes: Option<http::Binary>,
    pub headers: Vec<(String, String)>,
}

/// Runs one call through the whole pipeline as if it had come over HTTP (the key, its scopes
/// and rate limit, idempotency, the handler), for `/mcp`'s tool calls: one source of truth for
/// what a key may do. Its audit entry is recorded before this returns, marked `via`.
pub async fn call_internal(env: &Env, mut req: Request, via: &'static str) -> worker::Result<Internal> {
    let request_id = platform::new_id(crate::domain::ids::REQUEST);
    let mut facts: Option<app::audit::Facts> = None;
    let mut page: Option<&'static Route> = None;
    let db = store::db(env)?;
    let result = Box::pin(serve(&mut req, env.clone(), db, &request_id, &mut facts, &mut page, Some(via))).await;
    if let Some(f) = unrecorded_facts(facts, &result) {
        app::audit::record(env, f).await;
    }
    Ok(match result {
        Ok(s) => Internal { status: s.status, body: s.body, bytes: s.bytes, headers: s.headers },
        Err(e) => Internal { status: e.status, body: e.body(&request_id).to_string(), bytes: None, headers: vec![] },
    })
}

/// What the request cost on its own path: D1 round trips, queue sends and Durable Object calls
/// (each with its count and summed milliseconds), and the total. Work after the answer (the
/// audit entry when it is not in the request's batch) is not in it.
fn server_timing(cost: &store::Cost, total_ms: f64) -> String {
    let m = |name: &str, meter: &store::Meter| format!("{name};count={};dur={:.1}", meter.count(), meter.ms());
    format!("{}, {}, {}, total;dur={total_ms:.1}", m("d1", &cost.d1), m("queue", &cost.queue), m("do", &cost.durable_object))
}

/// An error on a page: the same status, as a page; a console page without a session sends
/// the browser to sign in.
fn error_page(e: &ApiError, route: &Route) -> Served {
    if e.status == 401 && route.access == Access::Console && route.method == "GET" {
        let reply = Reply::raw(303, String::new(), vec![("Location".into(), "/console/sign_in".into())]);
        return Served::from_reply(reply, Answer::Html);
    }
    let title = match e.status {
        401 => "Please sign in",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Already decided",
        413 => "Too large",
        _ if e.status >= 500 => "Something went wrong",
        _ => "This request could not be completed",
    };
    let back = if route.access == Access::Console { "<p><a href=\"/console\">Back to the console</a></p>" } else { "" };
    let html = console::page_shell(title, &format!("<p>{}</p>{back}", console::esc(&e.message)));
    Served::from_reply(Reply::raw(e.status, html, vec![]), Answer::Html)
}

/// The signed-in operator behind the console's session cookie; 401 `not_signed_in` otherwise.
async fn console_principal(req: &Request, db: &Db, now: i64) -> ApiResult<auth::Principal> {
    let token = http::cookie(req, app::operators::COOKIE);
    let signed = match token {
        Some(t) => app::operators::session(db, &t, now).await?,
        None => None,
    };
    let s = signed.ok_or_else(|| ApiError::new(401, "not_signed_in", "sign in to the console first"))?;
    Ok(app::operators::principal_of(&s, true))
}

fn query_value(req: &Request, name: &str) -> Option<String> {
    req.url().ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `/unsubscribe/{token}` matches `/unsubscribe/abc` (one non-empty segment per parameter).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('{') {
        return pattern == path;
    }
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| if a.starts_with('{') { !b.is_empty() } else { a == b })
}

/// The request's method as sent. (`worker::Method` reads any method it does not know, such as
/// `QUERY`, as `GET`; the raw name keeps an undeclared method a 405.)
fn method_name(req: &Request) -> String {
    req.inner().method()
}

async fn serve(req: &mut Request, env: Env, db: store::Db, request_id: &str, facts: &mut Option<app::audit::Facts>, page: &mut Option<&'static Route>, via: Option<&'static str>) -> ApiResult<Served> {
    let path = req.path();
    let method = method_name(req);
    let candidates: Vec<&Route> = ROUTES.iter().filter(|r| path_matches(r.path, &path)).collect();
    if candidates.is_empty() {
        return Err(ApiError::new(404, "not_found", format!("there is no route {path}")));
    }
    let Some(route) = candidates.iter().copied().find(|r| r.method == method) else {
        let allow: Vec<&str> = candidates.iter().map(|r| r.method).collect();
        let mut e = ApiError::new(405, "method_not_allowed", format!("{path} takes {}", allow.join(", ")));
        e.extra = Some(serde_json::json!({"allow": allow}));
        e.allow = Some(allow.join(", "));
        return Err(e);
    };

    if route.answer == Answer::Html {
        *page = Some(route);
    }
    let now = platform::now_ms();
    let config = Config::from_env(&env);
    // A keyed JSON route reads its body first, so that the key's lookup can carry the
    // idempotency reservation and the route's reads; its errors are answered in their usual
    // place, after authentication.
    // A body larger than most is read after the key is known, never for a stranger.
    let small = http::content_length(req).is_none_or(|n| n <= http::MAX_BODY_BYTES);
    let mut early_input = match (route.access, route.body) {
        (Key(_), Body::Json) if small => Some(http::read_json_object(req, http::MAX_BODY_BYTES).await.map(Input::Json)),
        _ => None,
    };
    let mut early = Early::default();
    let principal = match route.access {
        Public => None,
        Console => Some(console_principal(req, &db, now).await?),
        Deployment => {
            auth::require_operator(req, platform::secret(&env, "ADMIN_TOKEN").as_deref())?;
            None
        }
        Key(scopes) => {
            let (hash, livemode) = auth::presented_key(req)?;
            let body = match &early_input {
                Some(Ok(Input::Json(v))) => Some(v),
                _ => None,
            };
            let (p, e) = key_principal(req, &db, route, &hash, livemode, body, now, &config).await?;
            early = e;
            let checked = (|| {
                if route.method == "POST" && route.audited {
                    // Every authenticated state-changing call is audited, refused ones included.
                    *facts = Some(app::audit::Facts {
                        account_id: p.account_id.clone(),
                        livemode: p.livemode,
                        actor: p.key_id.clone(),
                        action: route.path.trim_start_matches('/').to_string(),
                        request_id: Some(request_id.to_string()),
                        ip: req.headers().get("CF-Connecting-IP").ok().flatten(),
                        country: req.cf().and_then(|cf| cf.country()),
                        via: via.map(str::to_string),
                        ..Default::default()
                    });
                }
                p.require_any(scopes)?;
                if route.account_wide && p.mailboxes.is_some() {
                    return Err(ApiError::new(403, "mailbox_limited_key", "this key is limited to some mailboxes; this call is about the whole account"));
                }
                Ok(())
            })();
            if let Err(e) = checked {
                early.release(&db, &p).await?;
                return Err(e);
            }
            Some(p)
        }
    };
    let mut principal = principal;
    if route.body == Body::Form {
        // Our forms post from our own pages: a browser names the page's origin, and another
        // site's page is refused (mail servers' one-click unsubscribes send no Origin).
        let ours = worker::Url::parse(&config.public_base_url).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        let origin = req.headers().get("Origin").ok().flatten();
        if origin.is_some_and(|o| o != "null" && o != ours) {
            return Err(ApiError::new(403, "cross_origin_form", "this form was posted from another site"));
        }
    }
    let input = match (early_input.take(), route.body) {
        (Some(read), _) => read?,
        (None, Body::None | Body::Raw) => Input::None,
        (None, Body::Json) => Input::Json(http::read_json_object(req, route.max_body).await?),
        (None, Body::Form) => Input::Form(http::read_form(req).await?),
    };
    if let Some(h) = principal.as_mut().filter(|p| p.human.is_some()) {
        // The console's live/test switch: `mode=test` in the query or the form.
        let mode = input.form_value("mode").map(str::to_string).or_else(|| query_value(req, "mode"));
        h.livemode = mode.as_deref() != Some("test");
        let csrf = &h.human.as_ref().expect("filtered").csrf;
        if route.body == Body::Form && !app::operators::csrf_ok(csrf, input.form_value("csrf")) {
            return Err(ApiError::new(403, "csrf_token_invalid", "this form is stale or did not come from the console; reload the page and try again"));
        }
        if route.method == "POST" {
            *facts = Some(app::audit::Facts {
                account_id: h.account_id.clone(),
                livemode: h.livemode,
                actor: h.actor_name(),
                action: route.path.trim_start_matches('/').to_string(),
                request_id: Some(request_id.to_string()),
                ip: req.headers().get("CF-Connecting-IP").ok().flatten(),
                ..Default::default()
            });
        }
    }
    if let (Some(f), Input::Json(body)) = (facts.as_mut(), &input) {
        let (mb, msg, mode) = app::audit::subjects(body, None);
        (f.mailbox, f.message_id, f.oversight_mode) = (mb, msg, mode);
    }

    let mut ctx = Ctx::new(env, db, config, request_id, now, principal);
    if let Some((key, results)) = early.prefetched.take() {
        ctx.set_prefetched(key, results);
    }
    let served = |reply: Reply| Served::from_reply(reply, route.answer);

    let idem_key = if route.idempotent && ctx.has_principal() { idempotency_key(req, input.json())? } else { None };
    if let (Some(f), Some(k)) = (facts.as_mut(), &idem_key) {
        f.idempotency_key = Some(k.as_str().to_string());
    }
    ctx.set_audit_facts(facts.clone());
    let Some(key) = idem_key else {
        let outcome = dispatch(&ctx, route, req, &input).await;
        return outcome.map(|r| Served { audited: ctx.was_audited(), ..served(r) });
    };

    // Idempotency: reserve the key, or answer from what is stored under it (both usually
    // settled by the key's lookup already).
    let key = key.as_str().to_string();
    let p = ctx.principal();
    let fingerprints = idempotency::fingerprints_for([&auth::presented_key(req)?.0, &p.key_id], route.method, route.path, input.json());
    let owned = match early.idem.take() {
        Some(EarlyIdem { key: k, outcome: IdemOutcome::Reserved }) if k == key => true,
        Some(EarlyIdem { key: k, outcome: IdemOutcome::Existing(record) }) if k == key => match judge(&record, &fingerprints, platform::now_ms()) {
            Judged::Answer(r) => return r,
            Judged::Retry => false,
        },
        _ => false,
    };
    if !owned {
        if let Some(replayed) = reserve_or_replay(&ctx, &key, &fingerprints).await? {
            return Ok(replayed);
        }
    }
    ctx.hold_idempotency_key(&key);
    let outcome = dispatch(&ctx, route, req, &input).await;
    let scope = ctx.idem_scope(&key);
    match &outcome {
        Ok(_) if ctx.idempotency_completed() => {}
        Ok(reply) if idempotency::is_stored(reply.status) => {
            ctx.db.exec(idem_store::complete(&ctx.db, &scope, reply.status, &reply.body.to_string())?).await?;
        }
        Err(e) if idempotency::is_stored(e.status) => {
            ctx.db.exec(idem_store::complete(&ctx.db, &scope, e.status, &e.body(request_id).to_string())?).await?;
        }
        _ => idem_store::release(&ctx.db, &scope).await?,
    }
    outcome.map(|r| Served { audited: ctx.was_audited(), ..served(r) })
}

/// What the key's lookup settled besides the key: the idempotency reservation and the route's
/// prefetched reads.
#[derive(Default)]
struct Early {
    idem: Option<EarlyIdem>,
    prefetched: Option<(String, Vec<worker::D1Result>)>,
}

struct EarlyIdem {
    key: String,
    outcome: IdemOutcome,
}

enum IdemOutcome {
    /// This request owns the key.
    Reserved,
    /// Another request holds or held it: its record.
    Existing(idempotency::StoredRecord),
    Unsettled,
}

impl Early {
    /// Gives back a reservation made for a request that is refused before it runs.
    async fn release(&self, db: &store::Db, p: &auth::Principal) -> ApiResult<()> {
        if let Some(EarlyIdem { key, outcome: IdemOutcome::Reserved }) = &self.idem {
            idem_store::release(db, &idem_store::Scope { account_id: &p.account_id, livemode: p.livemode, key }).await?;
        }
        Ok(())
    }
}

/// The key's principal, from one D1 round trip that also reserves the request's idempotency key
/// and runs the route's prefetched reads.
#[allow(clippy::too_many_arguments)]
async fn key_principal(req: &Request, db: &store::Db, route: &Route, hash: &str, livemode: bool, body: Option<&Value>, now: i64, config: &Config) -> ApiResult<(auth::Principal, Early)> {
    let mut extra = vec![];
    let mut idem = None;
    let mut prefetch_key = None;
    if let Some(body) = body {
        if route.idempotent {
            if let Ok(Some(k)) = idempotency_key(req, body) {
                let fingerprint = idempotency::fingerprint_for(hash, route.method, route.path, body);
                extra.push(idem_store::reserve_for_key(db, hash, k.as_str(), &fingerprint, now)?);
                extra.push(idem_store::load_for_key(db, hash, k.as_str())?);
                idem = Some(k.as_str().to_string());
            }
        }
        if let Some(pf) = route.prefetch.and_then(|f| f(db, hash, body, now)) {
            extra.extend(pf.statements);
            prefetch_key = Some(pf.key);
        }
    }
    let (found, mut results) = auth::lookup(db, hash, now, extra).await?;
    let mut early = Early::default();
    if let Some(key) = idem {
        let rest = results.split_off(2);
        let outcome = if idem_store::reserved(&results[0])? {
            IdemOutcome::Reserved
        } else {
            match idem_store::loaded(&results[1])? {
                Some(record) => IdemOutcome::Existing(record),
                // Not reserved and not found (the key was refused, or the record went): settled later.
                None => IdemOutcome::Unsettled,
            }
        };
        early.idem = Some(EarlyIdem { key, outcome });
        results = rest;
    }
    if let Some(key) = prefetch_key {
        early.prefetched = Some((key, results));
    }
    match auth::admit(found.clone(), hash, livemode, now, config.rate_limit_per_minute, config.account_rate_limit_per_minute) {
        Ok(p) => Ok((p, early)),
        Err(e) => {
            // A reservation made through a key that is then refused (its mode prefix, a rate
            // limit) is given back.
            if let (Some((row, _, _)), Some(EarlyIdem { key, outcome: IdemOutcome::Reserved })) = (found, &early.idem) {
                let scope = idem_store::Scope { account_id: &row.key.account_id, livemode: row.key.livemode == 1, key };
                idem_store::release(db, &scope).await?;
            }
            Err(e)
        }
    }
}

enum Judged {
    Answer(ApiResult<Served>),
    /// Expired, stale or in progress: go through `reserve_or_replay`.
    Retry,
}

/// What an existing record under the key means for this request. `fingerprints`: this
/// request's (by key hash) and the one records made before that change carry (by key id).
fn judge(record: &idempotency::StoredRecord, fingerprints: &[String; 2], now: i64) -> Judged {
    if now - record.created_at > idempotency::TTL_MS {
        return Judged::Retry;
    }
    let mut verdict = idempotency::on_existing(record, &fingerprints[0], now);
    if matches!(verdict, Replay::Mismatch) {
        verdict = idempotency::on_existing(record, &fingerprints[1], now);
    }
    match verdict {
        Replay::Replay { status, body } => Judged::Answer(Ok(Served { status, body, bytes: None, headers: vec![("Idempotent-Replayed".into(), "true".into())], json: None, audited: false })),
        Replay::Mismatch => Judged::Answer(Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )
        .with_field("idempotency_key"))),
        Replay::Stale | Replay::InProgress => Judged::Retry,
    }
}

fn idempotency_key(req: &Request, body: &Value) -> ApiResult<Option<IdempotencyKey>> {
    let header = req.headers().get("Idempotency-Key").ok().flatten();
    let in_body = http::opt_str(body, "idempotency_key")?;
    let raw = match (header.as_deref(), in_body) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::invalid_field("idempotency_key", "the Idempotency-Key header and the body's idempotency_key differ"));
        }
        (Some(h), _) => h.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) => return Ok(None),
    };
    IdempotencyKey::parse(&raw).map(Some).map_err(|m| ApiError::invalid_field("idempotency_key", m))
}

/// `Ok(None)`: this request owns the key and runs. `Ok(Some(_))`: answer with this replay.
async fn reserve_or_replay(ctx: &Ctx, key: &str, fingerprints: &[String; 2]) -> ApiResult<Option<Served>> {
    let scope = ctx.idem_scope(key);
    // A concurrent repeat waits briefly for the first to finish rather than failing at once.
    for wait in 0..8 {
        let now = platform::now_ms();
        if idem_store::reserve(&ctx.db, &scope, &fingerprints[0], now).await? {
            return Ok(None);
        }
        let Some(record) = idem_store::load(&ctx.db, &scope).await? else { continue };
        match judge(&record, fingerprints, now) {
            Judged::Answer(a) => return a.map(Some),
            Judged::Retry => {}
        }
        let expired = now - record.created_at > idempotency::TTL_MS;
        if expired || matches!(idempotency::on_existing(&record, &fingerprints[0], now), Replay::Stale) {
            if idem_store::take_over(&ctx.db, &scope, record.created_at, &fingerprints[0], now).await? {
                return Ok(None);
            }
            continue;
        }
        // In progress.
        if wait == 7 {
            break;
        }
        worker::Delay::from(Duration::from_millis(150)).await;
    }
    Err(ApiError::conflict("idempotency_key_in_progress", "a request with this Idempotency-Key is still running; retry shortly")
        .with_field("idempotency_key")
        .with_retry_after(1))
}

async fn dispatch(ctx: &Ctx, route: &Route, req: &mut Request, input: &Input) -> ApiResult<Reply> {
    let body = input.json();
    match (route.method, route.path) {
        (_, "/healthz") => health::healthz(ctx).await,
        (_, "/openapi.json") => Ok(Reply::raw(200, OPENAPI.to_string(), vec![])),
        (_, "/.well-known/jwks.json") => identity::jwks(ctx).await,
        (_, "/verify_identity") => identity::verify_identity(ctx, req).await,
        (_, "/admin/create_account") => admin::create_account(ctx, body).await,
        (_, "/admin/create_api_key") => admin::create_api_key(ctx, body).await,
        (_, "/admin/create_sign_in_link") => admin::create_sign_in_link(ctx, body).await,
        (_, "/create_api_key") => keys::create_api_key(ctx, body).await,
        (_, "/list_api_keys") => keys::list_api_keys(ctx, req).await,
        (_, "/revoke_api_key") => keys::revoke_api_key(ctx, body).await,
        (_, "/create_mailbox") => mailboxes::create_mailbox(ctx, body).await,
        (_, "/list_mailboxes") => mailboxes::list_mailboxes(ctx, req).await,
        (_, "/update_mailbox") => mailboxes::update_mailbox(ctx, body).await,
        (_, "/delete_mailbox") => mailboxes::delete_mailbox(ctx, body).await,
        (_, "/send_email") => send::send_email(ctx, body).await,
        (_, "/send_batch") => send::send_batch(ctx, req, body).await,
        (_, "/cancel_email") => emails::cancel_email(ctx, body).await,
        (_, "/get_email") => emails::get_email(ctx, req).await,
        (_, "/check_inbox") => inbox::check_inbox(ctx, req).await,
        (_, "/search_emails") => inbox::search_emails(ctx, req).await,
        (_, "/download_attachment") => inbox::download_attachment(ctx, req).await,
        (_, "/read_email") => inbox::read_email(ctx, req).await,
        (_, "/get_thread") => inbox::get_thread(ctx, req).await,
        (_, "/tag_email") => inbox::tag_email(ctx, body).await,
        (_, "/reply_email") => inbox::reply_email(ctx, body).await,
        (_, "/inbound/postmark") => inbound::postmark(ctx, req).await,
        (_, "/inbound/mime") => inbound::mime(ctx, req).await,
        (_, "/provider_events/postmark") => provider_events::postmark(ctx, req).await,
        (_, "/provider_events/resend") => provider_events::resend(ctx, req).await,
        (_, "/decide_email") => oversight::decide_email(ctx, body).await,
        (_, "/list_pending") => oversight::list_pending(ctx, req).await,
        (_, "/pause") => oversight::pause_sending(ctx, body).await,
        (_, "/resume") => oversight::resume_sending(ctx, body).await,
        ("GET", "/review") => review::show(ctx, req).await,
        ("POST", "/review") => review::decide(ctx, input).await,
        ("GET", "/unsubscribe/{token}") => suppressions::unsubscribe_page(ctx, req).await,
        ("POST", "/unsubscribe/{token}") => suppressions::unsubscribe(ctx, req).await,
        (_, "/list_suppressions") => suppressions::list_suppressions(ctx, req).await,
        (_, "/add_suppression") => suppressions::add_suppression(ctx, body).await,
        (_, "/remove_suppression") => suppressions::remove_suppression(ctx, body).await,
        (_, "/list_rules") => rules::list_rules(ctx, req).await,
        (_, "/add_rule") => rules::add_rule(ctx, body).await,
        (_, "/remove_rule") => rules::remove_rule(ctx, body).await,
        (_, "/create_domain") => domains::create_domain(ctx, body).await,
        (_, "/verify_domain") => domains::verify_domain(ctx, body).await,
        (_, "/list_domains") => domains::list_domains(ctx, req).await,
        (_, "/delete_domain") => domains::delete_domain(ctx, body).await,
        (_, "/get_audit_log") => audit::get_audit_log(ctx, req).await,
        (_, "/verify_audit_log") => audit::verify_audit_log(ctx, req).await,
        (_, "/export_audit_log") => audit::export_audit_log(ctx, req).await,
        (_, "/create_webhook") => webhooks::create_webhook(ctx, body).await,
        (_, "/list_webhooks") => webhooks::list_webhooks(ctx, req).await,
        (_, "/delete_webhook") => webhooks::delete_webhook(ctx, body).await,
        (_, "/rotate_webhook_secret") => webhooks::rotate_webhook_secret(ctx, body).await,
        (_, "/list_webhook_deliveries") => webhooks::list_webhook_deliveries(ctx, req).await,
        ("GET", "/console/sign_in") => console::sign_in::sign_in_page(ctx).await,
        ("POST", "/console/sign_in") => console::sign_in::request_link(ctx, input).await,
        ("GET", "/console/auth") => console::sign_in::auth_page(ctx, req).await,
        ("POST", "/console/auth") => console::sign_in::auth(ctx, req, input).await,
        (_, "/console/sign_out") => console::sign_in::sign_out(ctx).await,
        (_, "/console") => console::queue::pending(ctx, req).await,
        (_, "/console/message") => console::queue::message(ctx, req).await,
        (_, "/console/attachment") => console::queue::attachment(ctx, req).await,
        (_, "/console/decide") => console::queue::decide(ctx, input).await,
        (_, "/console/mailboxes") => console::settings::mailboxes(ctx, req).await,
        (_, "/console/update_mailbox") => console::settings::update_mailbox(ctx, input).await,
        (_, "/console/pause") => console::settings::pause(ctx, input, false).await,
        (_, "/console/resume") => console::settings::pause(ctx, input, true).await,
        (_, "/console/add_rule") => console::settings::add_rule(ctx, input).await,
        (_, "/console/remove_rule") => console::settings::remove_rule(ctx, input).await,
        (_, "/console/keys") => console::settings::keys(ctx, req).await,
        (_, "/console/create_key") => console::settings::create_key(ctx, input).await,
        (_, "/console/revoke_key") => console::settings::revoke_key(ctx, input).await,
        (_, "/console/sandbox") => console::records::sandbox(ctx, req).await,
        (_, "/console/search") => console::records::search_page(ctx, req).await,
        (_, "/console/audit") => console::records::audit_log(ctx, req).await,
        (_, "/console/webhooks") => console::records::webhooks_page(ctx, req).await,
        (_, "/console/operators") => console::settings::operators(ctx, req).await,
        (_, "/console/invite_operator") => console::settings::invite_operator(ctx, input).await,
        (_, "/console/remove_operator") => console::settings::remove_operator(ctx, input).await,
        (_, "/console/sessions") => console::settings::sessions(ctx, req).await,
        (_, "/console/revoke_session") => console::settings::revoke_session(ctx, input).await,
        (_, "/mcp") => mcp::mcp(ctx, req).await,
        (m, p) => {
            worker::console_error!("route {m} {p} is in ROUTES but not dispatched");
            Err(ApiError::internal())
        }
    }
}

pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The body of calls about one object by id: `{id}` (and the optional idempotency key).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ById {
    pub id: String,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// A page of results: the rows, and the cursor for the next page (the last id) when the page
/// is full.
pub fn page<T>(mut rows: Vec<T>, limit: u32, id_of: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let cursor = rows.last().map(&id_of);
        (rows, cursor)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::{Access, ROUTES, OPENAPI};
    use serde_json::Value;

    fn spec() -> Value {
        serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
    }

    #[test]
    fn every_route_is_in_the_openapi_document_and_nothing_else() {
        let spec = spec();
        let paths = spec["paths"].as_object().expect("paths");
        let mut documented = vec![];
        for (path, ops) in paths {
            for method in ops.as_object().expect("operations").keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    documented.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        let mut routed: Vec<String> = ROUTES.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed, "openapi.json and ROUTES disagree");
    }

    #[test]
    fn keyed_routes_document_bearer_auth_and_public_ones_do_not() {
        let spec = spec();
        for r in ROUTES {
            let op = &spec["paths"][r.path][r.method.to_lowercase()];
            let security = op.get("security").cloned().unwrap_or(spec["security"].clone());
            let public = security.as_array().is_some_and(|s| s.is_empty() || s.iter().all(|x| x.as_object().is_some_and(|o| o.is_empty())));
            match r.access {
                Access::Public => assert!(public, "{} {} is public but documents auth", r.method, r.path),
                _ => assert!(!public, "{} {} needs auth but documents none", r.method, r.path),
            }
        }
    }

    #[test]
    fn path_parameters_match_one_segment() {
        assert!(super::path_matches("/unsubscribe/{token}", "/unsubscribe/abc.def"));
        assert!(!super::path_matches("/unsubscribe/{token}", "/unsubscribe/"));
        assert!(!super::path_matches("/unsubscribe/{token}", "/unsubscribe/a/b"));
        assert!(super::path_matches("/send_email", "/send_email"));
    }

    #[test]
    fn idempotent_routes_take_a_json_body_from_a_key() {
        for r in ROUTES {
            if r.idempotent {
                assert_eq!(r.body, super::Body::Json, "{} {}: idempotency fingerprints a JSON body", r.method, r.path);
                assert!(matches!(r.access, Access::Key(_)), "{} {}: idempotency keys are scoped to a key's account", r.method, r.path);
            }
        }
        let mime = ROUTES.iter().find(|r| r.path == "/inbound/mime").expect("routed");
        assert!(!mime.idempotent && mime.body == super::Body::Raw, "raw MIME is declared raw and exempt");
        let send = ROUTES.iter().find(|r| r.path == "/send_email").expect("routed");
        assert!(send.idempotent);
    }

    #[test]
    fn pages_are_public_and_gets_read_no_body() {
        for r in ROUTES {
            if r.answer == super::Answer::Html {
                assert!(matches!(r.access, Access::Public | Access::Console), "{} {} is a page for a person: no API key", r.method, r.path);
            }
            if r.access == Access::Console && r.method == "POST" {
                assert_eq!(r.body, super::Body::Form, "POST {}: console actions are forms, each CSRF-checked", r.path);
            }
            if r.method == "GET" {
                assert_eq!(r.body, super::Body::None, "GET {} reads no body", r.path);
            }
        }
    }

    #[test]
    fn a_stored_answer_replays_for_either_fingerprint_of_the_same_caller() {
        use crate::domain::idempotency::StoredRecord;
        let now = 1_000_000;
        let fps = ["by-hash".to_string(), "by-key-id".to_string()];
        let stored = |fp: &str| StoredRecord { fingerprint: fp.into(), created_at: now - 1000, response: Some((202, "{}".into())) };
        // Records made before fingerprints used the key's hash carry its id: still replayed.
        for fp in ["by-hash", "by-key-id"] {
            assert!(matches!(super::judge(&stored(fp), &fps, now), super::Judged::Answer(Ok(ref s)) if s.status == 202), "{fp}");
        }
        assert!(matches!(super::judge(&stored("another request"), &fps, now), super::Judged::Answer(Err(ref e)) if e.code == "idempotency_key_reused"));
        // Expired, or still running: settled by reserve_or_replay.
        let old = StoredRecord { created_at: now - crate::domain::idempotency::TTL_MS - 1, ..stored("by-hash") };
        assert!(matches!(super::judge(&old, &fps, now), super::Judged::Retry));
        let running = StoredRecord { response: None, ..stored("by-hash") };
        assert!(matches!(super::judge(&running, &fps, now), super::Judged::Retry));
    }

    #[test]
    fn no_route_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {} twice", r.method, r.path);
        }
    }
}
