//! Recording to the audit trail from the worker: builds the entry and records it in D1
//! (`audit_pending`), in the caller's own write batch where it has one (`pending`) or in one
//! write (`record`); the account's `AuditChain` Durable Object seals pending entries into the
//! hash chain when the log is read (`seal`) and every minute from the cron (`seal_all`).

use serde_json::Value;
use worker::{D1PreparedStatement, Env, Headers, Method, Request, RequestInit};

use crate::domain::audit::AuditEntry;
use crate::domain::{ids, time::to_rfc3339};
use crate::platform;
use crate::store::messages::MessageRow;
use crate::store::{self, Db};

pub const PREFIX: &str = "aud";

/// The facts of one audited action: an entry whose id, time and chain `record` fills in.
pub type Facts = AuditEntry;

fn stub(env: &Env, account_id: &str, livemode: bool) -> worker::Result<worker::Stub> {
    env.durable_object("AUDIT")?.id_from_name(&format!("{account_id}:{}", if livemode { "live" } else { "test" }))?.get_stub()
}

/// The facts of something that happened to one message, done by `actor` (the system, a
/// provider or a human) rather than by an API call.
pub fn about_message(m: &MessageRow, actor: impl Into<String>, action: impl Into<String>, outcome: impl Into<String>, detail: Option<String>) -> Facts {
    Facts {
        account_id: m.account_id.clone(),
        livemode: m.is_live(),
        actor: actor.into(),
        action: action.into(),
        mailbox: Some(m.mailbox_id.clone()),
        message_id: Some(m.id.clone()),
        oversight_mode: Some(m.oversight_mode.as_str().into()),
        outcome: outcome.into(),
        detail,
        ..Default::default()
    }
}

/// Records a change to something both modes share (a mailbox's mode or oversight address, the
/// suppression list, a domain) in the account's **live** chain, whichever mode's credential
/// asked or decided: a test key's request that would loosen live oversight is visible there.
pub async fn record_live(ctx: &crate::app::Ctx, action: &str, mailbox: Option<String>, detail: String) {
    let p = ctx.principal();
    record(&ctx.env, Facts {
        account_id: p.account_id.clone(),
        livemode: true,
        actor: p.actor_name(),
        action: action.into(),
        mailbox,
        outcome: "ok".into(),
        request_id: Some(ctx.request_id.clone()),
        detail: Some(detail),
        ..Default::default()
    })
    .await;
}

/// The entry for `f`, with its id and time (its place in the chain comes when it is sealed).
pub fn entry(f: Facts) -> AuditEntry {
    let f = crate::domain::audit::bounded(f);
    AuditEntry { id: platform::new_id(PREFIX), seq: 0, at: to_rfc3339(platform::now_ms()), prev_hash: String::new(), hash: String::new(), ..f }
}

/// The statement that records one entry, for a write batch of the change it records.
pub fn pending(db: &Db, f: Facts) -> worker::Result<D1PreparedStatement> {
    store::audit::pend(db, &entry(f))
}

/// Records one entry. A failure is logged, never shown to the caller: the change it records has
/// already happened.
pub async fn record(env: &Env, f: Facts) {
    let e = entry(f);
    let done = match store::db(env) {
        Ok(db) => match store::audit::pend(&db, &e) {
            Ok(s) => db.exec(s).await,
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
    if let Err(err) = done {
        worker::console_error!("audit: could not record {} {} for {}: {err}", e.action, e.outcome, e.account_id);
    }
}

/// Has the chain's Durable Object seal what is pending (before the log is read).
pub async fn seal(env: &Env, account_id: &str, livemode: bool) -> worker::Result<()> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    let mut init = RequestInit::new();
    let body = serde_json::json!({"account_id": account_id, "livemode": livemode}).to_string();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let req = Request::new_with_init("https://audit/seal", &init)?;
    let resp = stub(env, account_id, livemode)?.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!("audit chain answered {}", resp.status_code())));
    }
    Ok(())
}

/// Seals every chain with entries waiting (the cron, every minute). Returns how many chains.
pub async fn seal_all(env: &Env) -> worker::Result<usize> {
    let db = store::db(env)?;
    let chains = store::audit::pending_chains(&db, 500).await?;
    for (account_id, livemode) in &chains {
        if let Err(e) = seal(env, account_id, *livemode).await {
            worker::console_error!("audit: sealing {account_id} ({}): {e}", if *livemode { "live" } else { "test" });
        }
    }
    Ok(chains.len())
}

/// Entries read per D1 round trip when walking a chain.
pub const CHUNK: u32 = 500;

/// Walks the chain of an account and mode and checks every link, and that nothing after the
/// head the chain's Durable Object wrote is missing: `domain::audit::Verifier`'s verdict.
pub async fn verify(ctx: &crate::app::Ctx, account_id: &str, livemode: bool) -> worker::Result<Value> {
    use crate::store::audit::{self as store_audit, Filter};
    seal(&ctx.env, account_id, livemode).await?;
    let mut verifier = crate::domain::audit::Verifier::default();
    let mut after = 0;
    'walk: loop {
        let rows = store_audit::page(&ctx.db, account_id, livemode, &Filter::default(), after, CHUNK).await?;
        for e in &rows {
            if !verifier.check(e) {
                break 'walk;
            }
        }
        match rows.last() {
            Some(last) if rows.len() == CHUNK as usize => after = last.seq,
            _ => break,
        }
    }
    let head = claimed_head(&ctx.env, account_id, livemode).await?;
    Ok(verifier.finish(head))
}

/// The head `(seq)` the chain's Durable Object has written.
pub async fn claimed_head(env: &Env, account_id: &str, livemode: bool) -> worker::Result<Option<i64>> {
    let mut resp = stub(env, account_id, livemode)?.fetch_with_str("https://audit/head").await?;
    let v: Value = resp.json().await?;
    Ok(v.get("seq").and_then(Value::as_i64))
}

/// Completes the facts of an API call that answered `status` (with `answer`, its JSON body).
pub fn answered(f: &mut Facts, status: u16, answer: Option<&Value>, replayed: bool) {
    f.outcome = if replayed { "replayed".into() } else { "ok".into() };
    f.status = Some(i64::from(status));
    let (mb, msg, mode) = subjects(&Value::Null, answer);
    f.mailbox = mb.or(f.mailbox.take());
    f.message_id = msg.or(f.message_id.take());
    f.oversight_mode = mode.or(f.oversight_mode.take());
}

/// Pulls the mailbox, message and mode an answer (or the request) is about.
pub fn subjects(request: &Value, answer: Option<&Value>) -> (Option<String>, Option<String>, Option<String>) {
    let s = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
    let prefixed = |v: Option<String>, p: &str| v.filter(|x| ids::has_prefix(x, p));
    let mailbox = s(answer, "mailbox_id")
        .or_else(|| prefixed(s(answer, "id"), ids::MAILBOX))
        .or_else(|| s(Some(request), "mailbox"))
        .or_else(|| prefixed(s(Some(request), "id"), ids::MAILBOX))
        .or_else(|| s(Some(request), "from"));
    let message = prefixed(s(answer, "id"), ids::MESSAGE)
        .or_else(|| prefixed(s(Some(request), "id"), ids::MESSAGE))
        .or_else(|| prefixed(s(Some(request), "message_id"), ids::MESSAGE));
    let mode = s(answer, "oversight_mode").or_else(|| s(Some(request), "oversight_mode"));
    (mailbox, message, mode)
}
