//! Mailboxes: create (on the account's verified domain), list, update, delete (history kept).
//! Stricter oversight applies at once; looser opens a mode change that a human must approve.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use super::page;
use crate::app::{access, changes, mailboxes, mode_changes, Ctx};
use crate::domain::changes::ChangeKind;
use crate::domain::address::EmailAddress;
use crate::domain::oversight::{initial_mode, parse_ttl};
use crate::domain::disclosure::AiDisclosure;
use crate::domain::scan::ScanPolicy;
use crate::domain::{ids, oversight::OversightMode, time::to_rfc3339};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::{self, mailboxes::{self as store_mb, MailboxRow}, mode_changes::{self as store_changes, ModeChangeRow}};

fn mode_change_json(c: &ModeChangeRow) -> Value {
    json!({"id": c.id, "from": c.from_mode, "to": c.to_mode, "status": c.status, "created_at": to_rfc3339(c.created_at)})
}

fn mailbox_json(m: &MailboxRow, change: Option<&ModeChangeRow>) -> Value {
    json!({
        "id": m.id,
        "address": m.address,
        "display_name": m.display_name,
        "oversight_mode": m.oversight_mode,
        "oversight_email": m.oversight_email,
        "approval_ttl": m.approval_ttl_secs,
        "scan": m.scan,
        "paused_at": m.paused_at.map(to_rfc3339),
        "ai_disclosure": m.ai_disclosure,
        "allowlist_bypass": m.allowlist_bypass == 1,
        "created_at": to_rfc3339(m.created_at),
        "updated_at": to_rfc3339(m.updated_at),
        "mode_change": change.map(mode_change_json),
    })
}

fn parse_mode(s: &str) -> ApiResult<OversightMode> {
    OversightMode::parse(s).ok_or_else(|| {
        ApiError::invalid_field("oversight_mode", format!("`{s}` is not a mode (read_only, gated_all, gated_send, monitored, autonomous)"))
    })
}

fn parse_display_name(s: &str) -> ApiResult<String> {
    if s.chars().count() > 100 || s.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("display_name", "`display_name` must be at most 100 characters with no control characters"));
    }
    Ok(s.trim().to_string())
}

fn parse_oversight_email(s: &str) -> ApiResult<String> {
    EmailAddress::parse(s).map(|a| a.to_string()).map_err(|e| ApiError::invalid_field("oversight_email", e.0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMailbox {
    address: String,
    display_name: Option<String>,
    oversight_mode: Option<String>,
    oversight_email: Option<String>,
    approval_ttl: Option<Value>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn create_mailbox(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: CreateMailbox = http::from_body(body)?;
    let address = EmailAddress::parse(&input.address).map_err(|e| ApiError::invalid_field("address", e.0))?;
    // Local parts are stored lower-cased: one mailbox per address, however it is written.
    let address = EmailAddress::parse(&address.to_string().to_ascii_lowercase()).expect("lower-casing keeps it valid");
    if !access::is_sending_domain(ctx, address.domain()).await? {
        return Err(ApiError::unprocessable(
            "domain_not_verified",
            format!("`{}` is not a verified domain of this account; use {}", address.domain(), p.default_domain),
        )
        .with_field("address"));
    }
    let requested = input.oversight_mode.as_deref().map(parse_mode).transpose()?.unwrap_or(OversightMode::GatedSend);
    // A human sets any mode at once; a key's looser mode waits for one.
    let human = p.actor().is_human();
    let (initial, waiting) = if human { (requested, None) } else { initial_mode(requested) };
    let oversight_email = input.oversight_email.as_deref().map(parse_oversight_email).transpose()?;
    let ttl = match &input.approval_ttl {
        None | Some(Value::Null) => ctx.config.default_approval_ttl_secs,
        Some(v) => parse_ttl(v).map_err(|m| ApiError::invalid_field("approval_ttl", m))?,
    };
    let mailbox = MailboxRow {
        id: platform::new_id(ids::MAILBOX),
        account_id: p.account_id.clone(),
        address: address.to_string(),
        display_name: input.display_name.as_deref().map(parse_display_name).transpose()?,
        oversight_mode: initial,
        // A key's oversight address waits for a human; until then the owner's applies.
        oversight_email: if human { oversight_email.clone() } else { None },
        approval_ttl_secs: ttl,
        created_at: ctx.now,
        updated_at: ctx.now,
        deleted_at: None,
        scan: Default::default(),
        paused_at: None,
        ai_disclosure: Default::default(),
        allowlist_bypass: 0,
    };
    let change = waiting.map(|to| mode_changes::new_change(ctx, &mailbox, to));
    let mut batch = vec![store_mb::insert(&ctx.db, &mailbox)?];
    let email_change = match oversight_email.as_deref().filter(|_| !human) {
        Some(e) => {
            let (c, statements) = changes::open(ctx, ChangeKind::OversightEmail, Some(&mailbox.id), &mailbox.id, Some(e))?;
            batch.extend(statements);
            Some(c)
        }
        None => None,
    };
    let mut body = mailbox_json(&mailbox, change.as_ref());
    body["oversight_email_change"] = json!(email_change.as_ref().map(changes::change_json));
    let reply = Reply::created(body);
    if let Some(c) = &change {
        batch.push(store_changes::insert(&ctx.db, c)?);
    }
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        batch.push(s);
    }
    match ctx.db.batch(batch).await {
        Ok(_) => {
            if let Some(c) = &email_change {
                changes::opened(ctx, c).await;
            }
            Ok(reply)
        }
        Err(e) if store::is_unique_violation(&e) => {
            Err(ApiError::conflict("mailbox_exists", format!("a mailbox {} already exists", mailbox.address)).with_field("address"))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list_mailboxes(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let allowed = p.mailboxes.as_ref().map(|m| serde_json::to_string(m).expect("strings serialize"));
    let rows = store_mb::list(&ctx.db, &p.account_id, allowed.as_deref(), q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = page(rows, limit, |m| m.id.clone());
    Ok(Reply::ok(json!({
        "mailboxes": rows.iter().map(|m| mailbox_json(m, None)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

/// A call about one mailbox names it by `id` or `mailbox` (its id or its address).
fn named<'a>(id: &'a Option<String>, mailbox: &'a Option<String>) -> ApiResult<&'a str> {
    id.as_deref().or(mailbox.as_deref()).ok_or_else(|| ApiError::invalid_field("id", "`id` (or `mailbox`) is required"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMailbox {
    id: Option<String>,
    mailbox: Option<String>,
    display_name: Option<String>,
    oversight_mode: Option<String>,
    oversight_email: Option<String>,
    approval_ttl: Option<Value>,
    scan: Option<String>,
    ai_disclosure: Option<String>,
    allowlist_bypass: Option<bool>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn update_mailbox(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: UpdateMailbox = http::from_body(body)?;
    let which = named(&input.id, &input.mailbox)?;
    let mut mailbox = access::visible_mailbox(ctx, which).await?;
    if let Some(d) = &input.display_name {
        mailbox.display_name = Some(parse_display_name(d)?);
    }
    let new_email = input.oversight_email.as_deref().map(parse_oversight_email).transpose()?;
    if let Some(t) = &input.approval_ttl {
        mailbox.approval_ttl_secs = parse_ttl(t).map_err(|m| ApiError::invalid_field("approval_ttl", m))?;
    }
    let requested = input.oversight_mode.as_deref().map(parse_mode).transpose()?;
    let scan = input
        .scan
        .as_deref()
        .map(|s| ScanPolicy::parse(s).ok_or_else(|| ApiError::invalid_field("scan", format!("`{s}` is not a scan policy (off, hold, block)"))))
        .transpose()?;
    let ai_disclosure = input
        .ai_disclosure
        .as_deref()
        .map(|s| AiDisclosure::parse(s).ok_or_else(|| ApiError::invalid_field("ai_disclosure", format!("`{s}` is not a disclosure (none, header, footer)"))))
        .transpose()?;
    let settings = mailboxes::Settings { mode: requested, oversight_email: new_email.as_deref(), scan, ai_disclosure, allowlist_bypass: input.allowlist_bypass };
    mailboxes::update(ctx, mailbox, settings, |u| {
        let mut body = mailbox_json(&u.shown, u.pending.as_ref());
        body["oversight_email_change"] = json!(u.email_change.as_ref().map(changes::change_json));
        body["scan_change"] = json!(u.scan_change.as_ref().map(changes::change_json));
        body["ai_disclosure_change"] = json!(u.disclosure_change.as_ref().map(changes::change_json));
        body["allowlist_bypass_change"] = json!(u.bypass_change.as_ref().map(changes::change_json));
        Reply::ok(body)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteMailbox {
    id: Option<String>,
    mailbox: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn delete_mailbox(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: DeleteMailbox = http::from_body(body)?;
    let which = named(&input.id, &input.mailbox)?;
    let mailbox = access::visible_mailbox(ctx, which).await?;
    let deleted = store_mb::soft_delete(&ctx.db, &mailbox.account_id, &mailbox.id, ctx.now)
        .await?
        .ok_or_else(|| ApiError::not_found("mailbox"))?;
    let mut v = mailbox_json(&deleted, None);
    v["deleted"] = json!(true);
    v["deleted_at"] = json!(deleted.deleted_at.map(to_rfc3339));
    Ok(Reply::ok(v))
}
