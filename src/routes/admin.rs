//! `POST /admin/create_account`: the deployment's operator creates an account, with its default
//! domain `<slug>.<MAIL_DOMAIN>` and one live and one test key (`admin`, `send`, `read`).

use serde::Deserialize;
use serde_json::json;

use crate::app::keys::{key_json, mint_key};
use crate::app::Ctx;
use crate::domain::{ids, keys::Scopes};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::{self, accounts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
}

/// `Acme, Inc.` → `acme-inc`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let mut slug: String = slug.trim_matches('-').chars().take(30).collect();
    slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() { "account".into() } else { slug }
}

pub async fn create_account(ctx: &Ctx, body: &serde_json::Value) -> ApiResult<Reply> {
    let input: CreateAccount = http::from_body(body)?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "`name` must be 1 to 100 characters with no control characters"));
    }
    let slug = slugify(name);
    let mut domain = format!("{slug}.{}", ctx.config.mail_domain);
    if accounts::domain_taken(&ctx.db, &domain).await? {
        let suffix = crate::domain::keys::hex(&platform::random_bytes::<2>());
        domain = format!("{slug}-{suffix}.{}", ctx.config.mail_domain);
    }
    let account = accounts::AccountRow { id: platform::new_id(ids::ACCOUNT), name: name.to_string(), default_domain: domain, created_at: ctx.now };
    let scopes = Scopes::parse(&["admin", "send", "read"]).expect("valid scopes");
    let (live_row, live_secret) = mint_key(&account.id, true, "default (live)", &scopes, None, ctx.now);
    let (test_row, test_secret) = mint_key(&account.id, false, "default (test)", &scopes, None, ctx.now);
    let batch = vec![
        accounts::insert(&ctx.db, &account)?,
        store::keys::insert(&ctx.db, &live_row)?,
        store::keys::insert(&ctx.db, &test_row)?,
    ];
    match ctx.db.batch(batch).await {
        Ok(_) => {}
        Err(e) if store::is_unique_violation(&e) => {
            return Err(ApiError::conflict("account_exists", "an account with that default domain was created at the same moment; try again"));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Reply::created(json!({
        "account": {"id": account.id, "name": account.name, "default_domain": account.default_domain,
                    "created_at": crate::domain::time::to_rfc3339(account.created_at)},
        "api_keys": [key_json(&live_row, Some(live_secret.reveal())), key_json(&test_row, Some(test_secret.reveal()))],
    })))
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugs_are_lowercase_dns_labels() {
        assert_eq!(slugify("Acme, Inc."), "acme-inc");
        assert_eq!(slugify("  --Über Corp--  "), "ber-corp");
        assert_eq!(slugify("日本"), "account");
        assert_eq!(slugify(&"x".repeat(80)).len(), 30);
    }
}
