//! Custom sending domains: `create_domain` (fresh DKIM keys and the records to publish),
//! `verify_domain` (look them up now), `list_domains`, `delete_domain`. Which domains a send may
//! use is `app::access::is_sending_domain`.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use super::page;
use crate::app::changes::{self, Asked};
use crate::app::Ctx;
use crate::domain::changes::ChangeKind;
use crate::domain::domains::DomainStatus;
use crate::domain::address::normalize_domain;
use crate::domain::{ids, time::to_rfc3339};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::{self, domains::{self as store_domains, DomainRow}};

pub const DOMAIN_PREFIX: &str = "dom";

fn domain_json(d: &DomainRow) -> Value {
    json!({
        "id": d.id,
        "domain": d.domain,
        "status": d.status,
        "records": crate::app::domains::records_of(d),
        "created_at": to_rfc3339(d.created_at),
        "verified_at": d.verified_at.map(to_rfc3339),
        "last_checked_at": d.last_checked_at.map(to_rfc3339),
    })
}

fn domain_exists(domain: &str) -> ApiError {
    ApiError::conflict("domain_exists", format!("`{domain}` is already a domain of this deployment")).with_field("domain")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDomain {
    domain: String,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn create_domain(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: CreateDomain = http::from_body(body)?;
    if !crate::app::domains::configured(&ctx.env) {
        return Err(ApiError::new(503, "not_configured", "DOMAIN_KEY_SECRET is not set on this deployment: DKIM keys cannot be sealed"));
    }
    let domain = normalize_domain(input.domain.trim()).map_err(|e| ApiError::invalid_field("domain", e.0))?;
    // The deployment's own domain and its subdomains (every account's default) are not custom.
    let mail_domain = ctx.config.mail_domain.to_ascii_lowercase();
    if domain == p.default_domain || domain == mail_domain || domain.ends_with(&format!(".{mail_domain}")) {
        return Err(domain_exists(&domain));
    }
    // A domain another account has verified is theirs; a pending claim of theirs blocks no one.
    if store_domains::verified_elsewhere(&ctx.db, &p.account_id, &domain).await? {
        return Err(domain_exists(&domain));
    }
    let id = platform::new_id(DOMAIN_PREFIX);
    let row = crate::app::domains::new_domain(&ctx.env, id, &p.account_id, &domain, ctx.now).await?;
    match store_domains::insert(&ctx.db, &row).await {
        Ok(()) => Ok(Reply::created(domain_json(&row))),
        Err(e) if store::is_unique_violation(&e) => Err(domain_exists(&domain)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ById {
    id: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// The account's live domain named by `id`; 404 for anything else, another account's included.
async fn owned_domain(ctx: &Ctx, body: &Value) -> ApiResult<DomainRow> {
    let input: ById = http::from_body(body)?;
    let id = input.id.ok_or_else(|| ApiError::invalid_field("id", "`id` is required: the domain's id (dom_…)"))?;
    if !ids::has_prefix(&id, DOMAIN_PREFIX) {
        return Err(ApiError::invalid_field("id", format!("`{id}` is not a domain id (dom_…)")));
    }
    store_domains::get(&ctx.db, &ctx.principal().account_id, &id)
        .await?
        .ok_or_else(|| ApiError::new(404, "domain_not_found", format!("no domain `{id}` in this account")).with_field("id"))
}

pub async fn verify_domain(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let row = owned_domain(ctx, body).await?;
    let checked = crate::app::domains::check(&ctx.env, &ctx.db, &row, ctx.now).await?;
    if checked.status != DomainStatus::Verified && store_domains::verified_elsewhere(&ctx.db, &row.account_id, &row.domain).await? {
        return Err(ApiError::conflict("domain_taken", format!("`{}` was verified by another account first", row.domain))
            .with_field("id")
            .with_extra(json!({"domain": domain_json(&checked)})));
    }
    Ok(Reply::ok(domain_json(&checked)))
}

pub async fn list_domains(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let rows = store_domains::list(&ctx.db, &p.account_id, q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = page(rows, limit, |d| d.id.clone());
    Ok(Reply::ok(json!({"domains": rows.iter().map(domain_json).collect::<Vec<_>>(), "next_cursor": next})))
}

pub async fn delete_domain(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let row = owned_domain(ctx, body).await?;
    if row.status == DomainStatus::Verified {
        // Mailboxes on it stop sending and receiving: a key's request waits for a human.
        if let Asked::Waiting(c) = changes::ask(ctx, ChangeKind::DeleteDomain, None, &row.id, Some(&row.domain)).await? {
            let mut v = domain_json(&row);
            v["deleted"] = json!(false);
            v["change"] = changes::change_json(&c);
            return Ok(Reply::accepted(v));
        }
        let mut v = domain_json(&row);
        v["deleted"] = json!(true);
        v["deleted_at"] = json!(to_rfc3339(ctx.now));
        return Ok(Reply::ok(v));
    }
    let deleted = store_domains::soft_delete(&ctx.db, &row.account_id, &row.id, ctx.now).await?.ok_or_else(|| ApiError::not_found("domain"))?;
    let mut v = domain_json(&deleted);
    v["deleted"] = json!(true);
    v["deleted_at"] = json!(deleted.deleted_at.map(to_rfc3339));
    Ok(Reply::ok(v))
}
