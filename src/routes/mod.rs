//! The route table and the path of every request: find the route, authenticate, parse the
//! body, go through idempotency (every keyed POST), run the handler, answer with a request id.
//! `ROUTES` is also what the OpenAPI document is checked against.

pub mod admin;
pub mod audit;
pub mod domains;
pub mod emails;
pub mod health;
pub mod inbound;
pub mod inbox;
pub mod keys;
pub mod mailboxes;
pub mod oversight;
pub mod provider_events;
pub mod review;
pub mod send;
pub mod suppressions;
pub mod webhooks;

use std::cell::Cell;
use std::time::Duration;

use serde_json::Value;
use worker::{D1Database, D1PreparedStatement, Env, Method, Request, Response};

use crate::domain::idempotency::{self, IdempotencyKey, Replay};
use crate::domain::keys::Scope;
use crate::http::auth::{self, Principal};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform::{self, Config};
use crate::store::{self, idempotency as idem_store};

#[derive(Debug, Clone, Copy)]
pub enum Access {
    Public,
    /// The deployment operator's `ADMIN_TOKEN`.
    Operator,
    /// An API key holding any one of these scopes.
    Key(&'static [Scope]),
}

#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route { method, path, access }
}

use Access::{Key, Operator, Public};
const READ: &[Scope] = &[Scope::Read];
const SEND: &[Scope] = &[Scope::Send];
const ADMIN: &[Scope] = &[Scope::Admin];
const READ_OR_ADMIN: &[Scope] = &[Scope::Read, Scope::Admin];
const READ_SEND_OR_OVERSIGHT: &[Scope] = &[Scope::Read, Scope::Send, Scope::Oversight];
const OVERSIGHT: &[Scope] = &[Scope::Oversight];
const READ_OR_OVERSIGHT: &[Scope] = &[Scope::Read, Scope::Oversight];

pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", Public),
    route("GET", "/openapi.json", Public),
    route("GET", "/.well-known/jwks.json", Public),
    route("GET", "/verify_identity", Public),
    route("POST", "/admin/create_account", Operator),
    route("POST", "/create_api_key", Key(ADMIN)),
    route("GET", "/list_api_keys", Key(ADMIN)),
    route("POST", "/revoke_api_key", Key(ADMIN)),
    route("POST", "/create_mailbox", Key(ADMIN)),
    route("GET", "/list_mailboxes", Key(READ_OR_ADMIN)),
    route("POST", "/update_mailbox", Key(ADMIN)),
    route("POST", "/delete_mailbox", Key(ADMIN)),
    route("POST", "/send_email", Key(SEND)),
    route("POST", "/cancel_email", Key(SEND)),
    route("GET", "/get_email", Key(READ_SEND_OR_OVERSIGHT)),
    route("GET", "/check_inbox", Key(READ)),
    route("GET", "/read_email", Key(READ)),
    route("GET", "/get_thread", Key(READ)),
    route("POST", "/tag_email", Key(SEND)),
    route("POST", "/reply_email", Key(SEND)),
    route("POST", "/inbound/postmark", Public),
    route("POST", "/inbound/mime", Key(ADMIN)),
    route("POST", "/provider_events/postmark", Public),
    route("POST", "/provider_events/resend", Public),
    route("POST", "/decide_email", Key(OVERSIGHT)),
    route("GET", "/list_pending", Key(READ_OR_OVERSIGHT)),
    route("GET", "/review", Public),
    route("POST", "/review", Public),
    route("GET", "/list_suppressions", Key(ADMIN)),
    route("POST", "/add_suppression", Key(ADMIN)),
    route("POST", "/remove_suppression", Key(ADMIN)),
    route("GET", "/unsubscribe/{token}", Public),
    route("POST", "/unsubscribe/{token}", Public),
    route("POST", "/create_domain", Key(ADMIN)),
    route("POST", "/verify_domain", Key(ADMIN)),
    route("GET", "/list_domains", Key(ADMIN)),
    route("POST", "/delete_domain", Key(ADMIN)),
    route("GET", "/get_audit_log", Key(ADMIN)),
    route("GET", "/verify_audit_log", Key(ADMIN)),
    route("GET", "/export_audit_log", Key(ADMIN)),
    route("POST", "/create_webhook", Key(ADMIN)),
    route("GET", "/list_webhooks", Key(ADMIN)),
    route("POST", "/delete_webhook", Key(ADMIN)),
    route("POST", "/rotate_webhook_secret", Key(ADMIN)),
    route("GET", "/list_webhook_deliveries", Key(ADMIN)),
];

/// Everything a handler may use.
pub struct Ctx {
    pub env: Env,
    pub db: D1Database,
    pub config: Config,
    pub request_id: String,
    pub now: i64,
    /// `https://host` of this request, for links the API hands out.
    pub origin: String,
    principal: Option<Principal>,
    idem: Option<IdemSlot>,
}

struct IdemSlot {
    key: String,
    completed: Cell<bool>,
}

impl Ctx {
    /// The caller's key; only routes with `Access::Key` reach handlers that call this.
    pub fn principal(&self) -> &Principal {
        self.principal.as_ref().expect("keyed route has a principal")
    }

    fn idem_scope<'a>(&'a self, slot: &'a IdemSlot) -> idem_store::Scope<'a> {
        let p = self.principal();
        idem_store::Scope { account_id: &p.account_id, livemode: p.livemode, key: &slot.key }
    }

    /// The statement that stores this answer for replay, for a handler to put in its own write
    /// batch (so the answer and the change commit together). `None` without an idempotency key.
    pub fn idempotency_completion(&self, reply: &Reply) -> ApiResult<Option<D1PreparedStatement>> {
        let Some(slot) = &self.idem else { return Ok(None) };
        if !idempotency::is_stored(reply.status) {
            return Ok(None);
        }
        let stmt = idem_store::complete(&self.db, &self.idem_scope(slot), reply.status, &reply.body.to_string())?;
        slot.completed.set(true);
        Ok(Some(stmt))
    }

    pub fn idempotency_key(&self) -> Option<&str> {
        self.idem.as_ref().map(|s| s.key.as_str())
    }
}

struct Served {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
    json: Option<Value>,
}

impl From<Reply> for Served {
    fn from(r: Reply) -> Self {
        match r.raw {
            Some(raw) => Served { status: r.status, body: raw, headers: r.headers, json: None },
            None => Served { status: r.status, body: r.body.to_string(), headers: r.headers, json: Some(r.body) },
        }
    }
}

pub async fn handle(mut req: Request, env: Env, wctx: worker::Context) -> worker::Result<Response> {
    let request_id = platform::new_id(crate::domain::ids::REQUEST);
    let mut facts: Option<crate::audit::Facts> = None;
    let result = serve(&mut req, env.clone(), &request_id, &mut facts).await;
    if let Some(mut f) = facts {
        // Every authenticated state-changing call is audited, refused ones included.
        match &result {
            Ok(s) => {
                let replayed = s.headers.iter().any(|(k, _)| k == "Idempotent-Replayed");
                f.outcome = if replayed { "replayed".into() } else { "ok".into() };
                f.status = Some(i64::from(s.status));
                let answer = s.json.clone().or_else(|| serde_json::from_str(&s.body).ok());
                let (mb, msg, mode) = crate::audit::subjects(&Value::Null, answer.as_ref());
                f.mailbox = mb.or(f.mailbox);
                f.message_id = msg.or(f.message_id);
                f.oversight_mode = mode.or(f.oversight_mode);
            }
            Err(e) => {
                f.outcome = e.code.to_string();
                f.status = Some(i64::from(e.status));
                f.detail = Some(e.message.chars().take(300).collect());
            }
        }
        // Appended after the answer, within this invocation: the chain's Durable Object
        // serialises appends per account, and callers should not queue behind it.
        let env = env.clone();
        wctx.wait_until(async move { crate::audit::record(&env, f).await });
    }
    match result {
        Ok(s) => http::json_response(s.status, &s.body, &request_id, &s.headers),
        Err(e) => {
            if e.status >= 500 {
                worker::console_error!("{request_id}: {} {}", e.status, e.code);
            }
            http::error_response(&e, &request_id)
        }
    }
}

/// `/unsubscribe/{token}` matches `/unsubscribe/abc` (one non-empty segment per parameter).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('{') {
        return pattern == path;
    }
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| if a.starts_with('{') { !b.is_empty() } else { a == b })
}

fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
        Method::Options => "OPTIONS",
        _ => "OTHER",
    }
}

async fn serve(req: &mut Request, env: Env, request_id: &str, facts: &mut Option<crate::audit::Facts>) -> ApiResult<Served> {
    let path = req.path();
    let method = method_name(&req.method());
    let candidates: Vec<&Route> = ROUTES.iter().filter(|r| path_matches(r.path, &path)).collect();
    if candidates.is_empty() {
        return Err(ApiError::new(404, "not_found", format!("there is no route {path}")));
    }
    let Some(route) = candidates.iter().find(|r| r.method == method) else {
        let allow: Vec<&str> = candidates.iter().map(|r| r.method).collect();
        let mut e = ApiError::new(405, "method_not_allowed", format!("{path} takes {}", allow.join(", ")));
        e.extra = Some(serde_json::json!({"allow": allow}));
        e.allow = Some(allow.join(", "));
        return Err(e);
    };
    if route.path == "/openapi.json" {
        return Ok(Served { status: 200, body: OPENAPI.to_string(), headers: vec![], json: None });
    }

    let now = platform::now_ms();
    if route.path == "/review" {
        let p = review::handle(req, &env, method, now).await?;
        let headers = vec![
            ("Content-Type".to_string(), "text/html; charset=utf-8".to_string()),
            ("Content-Security-Policy".to_string(), "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'".to_string()),
            ("X-Frame-Options".to_string(), "DENY".to_string()),
            ("Referrer-Policy".to_string(), "no-referrer".to_string()),
        ];
        return Ok(Served { status: p.status, body: p.html, headers, json: None });
    }
    if route.path == "/unsubscribe/{token}" {
        let (status, html) = suppressions::unsubscribe(&env, &path, method, now).await?;
        let headers = vec![
            ("Content-Type".to_string(), "text/html; charset=utf-8".to_string()),
            ("Referrer-Policy".to_string(), "no-referrer".to_string()),
        ];
        return Ok(Served { status, body: html, headers, json: None });
    }
    let config = Config::from_env(&env);
    let db = store::db(&env)?;
    let principal = match route.access {
        Public => None,
        Operator => {
            auth::require_operator(req, platform::secret(&env, "ADMIN_TOKEN").as_deref())?;
            None
        }
        Key(scopes) => {
            let p = auth::authenticate(req, &db, now, config.rate_limit_per_minute).await?;
            if route.method == "POST" {
                *facts = Some(crate::audit::Facts {
                    account_id: p.account_id.clone(),
                    livemode: p.livemode,
                    actor: p.key_id.clone(),
                    action: route.path.trim_start_matches('/').to_string(),
                    request_id: Some(request_id.to_string()),
                    ip: req.headers().get("CF-Connecting-IP").ok().flatten(),
                    country: req.cf().and_then(|cf| cf.country()),
                    ..Default::default()
                });
            }
            p.require_any(scopes)?;
            Some(p)
        }
    };
    // Webhook ways in take their own bodies (raw MIME, Postmark's JSON with its own auth).
    if route.path == "/inbound/postmark" {
        return inbound::postmark(req, &env).await.map(Served::from);
    }
    if route.path == "/provider_events/postmark" {
        return provider_events::postmark(req, &env).await.map(Served::from);
    }
    if route.path == "/provider_events/resend" {
        return provider_events::resend(req, &env).await.map(Served::from);
    }
    if route.path == "/inbound/mime" {
        let p = principal.as_ref().expect("keyed route");
        return inbound::mime(req, &env, p).await.map(Served::from);
    }
    let body = if route.method == "POST" { http::read_json_object(req).await? } else { Value::Null };
    if let Some(f) = facts.as_mut() {
        let (mb, msg, mode) = crate::audit::subjects(&body, None);
        (f.mailbox, f.message_id, f.oversight_mode) = (mb, msg, mode);
    }

    let origin = req.url().map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let mut ctx = Ctx { env, db, config, request_id: request_id.to_string(), now, origin, principal, idem: None };

    let idem_key = if ctx.principal.is_some() && route.method == "POST" { idempotency_key(req, &body)? } else { None };
    if let (Some(f), Some(k)) = (facts.as_mut(), &idem_key) {
        f.idempotency_key = Some(k.as_str().to_string());
    }
    let Some(key) = idem_key else {
        return dispatch(&ctx, route, req, &body).await.map(Served::from);
    };

    // Idempotency: reserve the key, or answer from what is stored under it.
    let fingerprint = idempotency::fingerprint(route.method, route.path, &body);
    let slot = IdemSlot { key: key.as_str().to_string(), completed: Cell::new(false) };
    if let Some(replayed) = reserve_or_replay(&ctx, &slot, &fingerprint).await? {
        return Ok(replayed);
    }
    ctx.idem = Some(slot);
    let outcome = dispatch(&ctx, route, req, &body).await;
    let slot = ctx.idem.as_ref().expect("set above");
    let scope = ctx.idem_scope(slot);
    match &outcome {
        Ok(reply) if !slot.completed.get() && idempotency::is_stored(reply.status) => {
            idem_store::complete(&ctx.db, &scope, reply.status, &reply.body.to_string())?.run().await?;
        }
        Ok(_) if slot.completed.get() => {}
        Err(e) if idempotency::is_stored(e.status) => {
            idem_store::complete(&ctx.db, &scope, e.status, &e.body(request_id).to_string())?.run().await?;
        }
        _ => idem_store::release(&ctx.db, &scope).await?,
    }
    outcome.map(Served::from)
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
async fn reserve_or_replay(ctx: &Ctx, slot: &IdemSlot, fingerprint: &str) -> ApiResult<Option<Served>> {
    let scope = ctx.idem_scope(slot);
    // A concurrent repeat waits briefly for the first to finish rather than failing at once.
    for wait in 0..8 {
        let now = platform::now_ms();
        if idem_store::reserve(&ctx.db, &scope, fingerprint, now).await? {
            return Ok(None);
        }
        let Some(record) = idem_store::load(&ctx.db, &scope).await? else { continue };
        if now - record.created_at > idempotency::TTL_MS {
            if idem_store::take_over(&ctx.db, &scope, record.created_at, fingerprint, now).await? {
                return Ok(None);
            }
            continue;
        }
        match idempotency::on_existing(&record, fingerprint, now) {
            Replay::Replay { status, body } => {
                return Ok(Some(Served { status, body, headers: vec![("Idempotent-Replayed".into(), "true".into())], json: None }));
            }
            Replay::Mismatch => {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request; use a new key for a new request",
                )
                .with_field("idempotency_key"));
            }
            Replay::Stale => {
                if idem_store::take_over(&ctx.db, &scope, record.created_at, fingerprint, now).await? {
                    return Ok(None);
                }
            }
            Replay::InProgress => {
                if wait == 7 {
                    break;
                }
                worker::Delay::from(Duration::from_millis(150)).await;
            }
        }
    }
    Err(ApiError::conflict("idempotency_key_in_progress", "a request with this Idempotency-Key is still running; retry shortly")
        .with_field("idempotency_key")
        .with_retry_after(1))
}

async fn dispatch(ctx: &Ctx, route: &Route, req: &Request, body: &Value) -> ApiResult<Reply> {
    match route.path {
        "/healthz" => health::healthz(ctx).await,
        "/.well-known/jwks.json" => Ok(Reply::ok(crate::identity::jwks(&ctx.env)?)),
        "/verify_identity" => {
            let q = http::query_params(req, &["jws"])?;
            let jws = q.get("jws").ok_or_else(|| ApiError::invalid_field("jws", "`jws` is required: the MultiMail-Identity header's value"))?;
            let v = crate::domain::identity::verify(jws, &crate::identity::jwks(&ctx.env)?);
            Ok(Reply::ok(serde_json::to_value(v).map_err(|_| ApiError::internal())?))
        }
        "/admin/create_account" => admin::create_account(ctx, body).await,
        "/create_api_key" => keys::create_api_key(ctx, body).await,
        "/list_api_keys" => keys::list_api_keys(ctx, req).await,
        "/revoke_api_key" => keys::revoke_api_key(ctx, body).await,
        "/create_mailbox" => mailboxes::create_mailbox(ctx, body).await,
        "/list_mailboxes" => mailboxes::list_mailboxes(ctx, req).await,
        "/update_mailbox" => mailboxes::update_mailbox(ctx, body).await,
        "/delete_mailbox" => mailboxes::delete_mailbox(ctx, body).await,
        "/send_email" => send::send_email(ctx, body).await,
        "/cancel_email" => emails::cancel_email(ctx, body).await,
        "/get_email" => emails::get_email(ctx, req).await,
        "/check_inbox" => inbox::check_inbox(ctx, req).await,
        "/read_email" => inbox::read_email(ctx, req).await,
        "/get_thread" => inbox::get_thread(ctx, req).await,
        "/tag_email" => inbox::tag_email(ctx, body).await,
        "/reply_email" => inbox::reply_email(ctx, body).await,
        "/decide_email" => oversight::decide_email(ctx, body).await,
        "/list_pending" => oversight::list_pending(ctx, req).await,
        "/list_suppressions" => suppressions::list_suppressions(ctx, req).await,
        "/add_suppression" => suppressions::add_suppression(ctx, body).await,
        "/remove_suppression" => suppressions::remove_suppression(ctx, body).await,
        "/create_domain" => domains::create_domain(ctx, body).await,
        "/verify_domain" => domains::verify_domain(ctx, body).await,
        "/list_domains" => domains::list_domains(ctx, req).await,
        "/delete_domain" => domains::delete_domain(ctx, body).await,
        "/get_audit_log" => audit::get_audit_log(ctx, req).await,
        "/verify_audit_log" => audit::verify_audit_log(ctx).await,
        "/export_audit_log" => audit::export_audit_log(ctx).await,
        "/create_webhook" => webhooks::create_webhook(ctx, body).await,
        "/list_webhooks" => webhooks::list_webhooks(ctx, req).await,
        "/delete_webhook" => webhooks::delete_webhook(ctx, body).await,
        "/rotate_webhook_secret" => webhooks::rotate_webhook_secret(ctx, body).await,
        "/list_webhook_deliveries" => webhooks::list_webhook_deliveries(ctx, req).await,
        other => {
            worker::console_error!("route {other} is in ROUTES but not dispatched");
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
    fn no_route_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {} twice", r.method, r.path);
        }
    }
}
