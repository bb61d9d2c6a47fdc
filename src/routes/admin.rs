//! The deployment operator's calls (`ADMIN_TOKEN`): `create_account` (its default domain
//! `<slug>.<MAIL_DOMAIN>`, its owner, and one live and one test key with `admin`, `send`,
//! `read`), `create_api_key` (any key of any account, oversight keys included: the deployment
//! operator is a human), and `create_sign_in_link` (a console link for an operator, for local
//! development and tests where mail stays in the sandbox).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::keys::{self, key_json, mint_key, NewKey};
use crate::app::{operators, Ctx};
use crate::domain::address::EmailAddress;
use crate::domain::authority::Role;
use crate::domain::time::to_rfc3339;
use crate::domain::{ids, keys::Scopes};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::{self, accounts, operators::{self as store_ops, OperatorRow}};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
    owner_email: String,
}

/// An operator's address: an addr-spec, lower-cased.
pub fn parse_operator_email(s: &str, field: &str) -> ApiResult<String> {
    EmailAddress::parse(s.trim()).map(|a| a.to_string().to_ascii_lowercase()).map_err(|e| ApiError::invalid_field(field, e.0))
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
    let owner_email = parse_operator_email(&input.owner_email, "owner_email")?;
    let slug = slugify(name);
    let mut domain = format!("{slug}.{}", ctx.config.mail_domain);
    if accounts::domain_taken(&ctx.db, &domain).await? {
        let suffix = crate::domain::keys::hex(&platform::random_bytes::<2>());
        domain = format!("{slug}-{suffix}.{}", ctx.config.mail_domain);
    }
    let account = accounts::AccountRow {
        id: platform::new_id(ids::ACCOUNT),
        name: name.to_string(),
        default_domain: domain,
        owner_email: Some(owner_email.clone()),
        created_at: ctx.now,
        paused_at: None,
    };
    let owner = OperatorRow {
        id: platform::new_id(operators::OPERATOR_PREFIX),
        account_id: account.id.clone(),
        email: owner_email,
        role: Role::Owner,
        invited_by: None,
        created_at: ctx.now,
        removed_at: None,
    };
    let scopes = Scopes::parse(&["admin", "send", "read"]).expect("valid scopes");
    let (live_row, live_secret) = mint_key(&account.id, true, "default (live)", &scopes, None, ctx.now);
    let (test_row, test_secret) = mint_key(&account.id, false, "default (test)", &scopes, None, ctx.now);
    let batch = vec![
        accounts::insert(&ctx.db, &account)?,
        store_ops::insert(&ctx.db, &owner)?,
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
                    "owner_email": account.owner_email, "created_at": to_rfc3339(account.created_at)},
        "owner": {"id": owner.id, "email": owner.email, "role": owner.role},
        "api_keys": [key_json(&live_row, Some(live_secret.reveal())), key_json(&test_row, Some(test_secret.reveal()))],
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminCreateKey {
    account: String,
    name: String,
    scopes: Vec<String>,
    livemode: bool,
    mailboxes: Option<Vec<String>>,
}

/// The deployment operator mints any key of an account, oversight keys included.
pub async fn create_api_key(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: AdminCreateKey = http::from_body(body)?;
    let name = keys::parse_name(&input.name)?;
    let scopes = Scopes::parse(&input.scopes)?;
    let account = accounts::get(&ctx.db, &input.account).await?.ok_or_else(|| ApiError::new(404, "account_not_found", format!("no account `{}`", input.account)).with_field("account"))?;
    let mailbox_ids = match &input.mailboxes {
        None => None,
        Some(list) => Some(keys::resolve_mailboxes(&ctx.db, &account.id, list, |_| true).await?),
    };
    keys::create(ctx, NewKey { account_id: &account.id, livemode: input.livemode, name, scopes, mailboxes: mailbox_ids }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSignInLink {
    account: String,
    email: Option<String>,
}

/// A console sign-in link for an operator of the account (the owner when no `email` is given),
/// answered to the deployment operator instead of emailed.
pub async fn create_sign_in_link(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: AdminSignInLink = http::from_body(body)?;
    let account = accounts::get(&ctx.db, &input.account).await?.ok_or_else(|| ApiError::new(404, "account_not_found", format!("no account `{}`", input.account)).with_field("account"))?;
    let email = match &input.email {
        Some(e) => parse_operator_email(e, "email")?,
        None => account.owner_email.clone().ok_or_else(|| ApiError::new(404, "operator_not_found", "this account has no owner; name an operator's `email`").with_field("email"))?,
    };
    let op = store_ops::by_email(&ctx.db, &account.id, &email).await?.ok_or_else(|| ApiError::new(404, "operator_not_found", format!("no operator `{email}` in this account")).with_field("email"))?;
    let (url, expires_at) = operators::new_sign_in_link(ctx, &op).await?;
    Ok(Reply::created(json!({"url": url, "operator": {"id": op.id, "email": op.email, "role": op.role}, "expires_at": to_rfc3339(expires_at)})))
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
