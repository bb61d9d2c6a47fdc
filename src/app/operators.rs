//! Operators, the humans of an account: invitations, single-use sign-in links (emailed through
//! the normal delivery path, valid 10 minutes), and console sessions. Tokens are 32 random
//! bytes; D1 keeps only their SHA-256.

use crate::store::Db;
use serde_json::json;

use crate::app::outbound::{stage_outbound, Owner, Staged};
use crate::app::{audit, queues, Ctx};
use crate::domain::address::{EmailAddress, Recipient};
use crate::domain::authority::Role;
use crate::domain::keys::{hex, secrets_equal};
use crate::domain::message::{MessageKind, MessageStatus};
use crate::domain::oversight::OversightMode;
use crate::domain::send::ValidatedSend;
use crate::domain::{ids, time::to_rfc3339};
use crate::http::auth::{Human, Principal};
use crate::http::{ApiError, ApiResult};
use crate::platform;
use crate::store::accounts::{self, AccountRow};
use crate::store::operators::{self, NewSession, OperatorRow, SignedIn};

pub const OPERATOR_PREFIX: &str = "op";
pub const SESSION_PREFIX: &str = "ses";
pub const SIGN_IN_TTL_MS: i64 = 10 * 60 * 1000;
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// The console's session cookie.
pub const COOKIE: &str = "mm_session";

fn token() -> String {
    hex(&platform::random_bytes::<32>())
}

pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(token.as_bytes()))
}

/// A fresh sign-in link for `op`: its URL (on `PUBLIC_BASE_URL`) and when it expires.
pub async fn new_sign_in_link(ctx: &Ctx, op: &OperatorRow) -> ApiResult<(String, i64)> {
    let t = token();
    let expires_at = ctx.now + SIGN_IN_TTL_MS;
    ctx.db.exec(operators::insert_sign_in_link(&ctx.db, &token_hash(&t), &op.id, ctx.now, expires_at)?).await?;
    Ok((format!("{}/console/auth?token={t}", ctx.config.public_base_url), expires_at))
}

/// Emails `op` a sign-in link, as a live message of the account (our own: kind `sign_in`,
/// never visible to a key) through the delivery queue.
pub async fn email_sign_in_link(ctx: &Ctx, account: &AccountRow, op: &OperatorRow) -> ApiResult<()> {
    let (url, expires_at) = new_sign_in_link(ctx, op).await?;
    let text = format!(
        "Someone (we hope you) asked to sign in to the MultiMail console for {name}.\n\nSign in: {url}\n\nThe link works once, until {exp}. If you did not ask for it, ignore this email.\n",
        name = account.name,
        exp = to_rfc3339(expires_at),
    );
    let staged = system_email(ctx, account, &op.email, "Your MultiMail sign-in link", text)?;
    let id = staged.row.id.clone();
    ctx.db.batch(staged.statements(&ctx.db)?).await?;
    queues::enqueue_delivery(&ctx.env, &id, None, ctx.now).await?;
    Ok(())
}

/// A message from the deployment to a person (not from a mailbox of the user's).
fn system_email(ctx: &Ctx, account: &AccountRow, to: &str, subject: &str, text: String) -> ApiResult<Staged> {
    let from = EmailAddress::parse(&format!("console@{}", account.default_domain)).map_err(|_| ApiError::internal())?;
    let v = ValidatedSend {
        from: Recipient { name: Some("MultiMail".into()), address: from },
        to: vec![Recipient::parse(to).map_err(|_| ApiError::internal())?],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: subject.to_string(),
        text: Some(text),
        html: None,
        headers: vec![("Auto-Submitted".into(), "auto-generated".into())],
        attachments: vec![],
        oversight_mode: None,
        metadata: json!({}),
        send_at: None,
        approval_ttl_secs: None,
        marketing: false,
    };
    let owner = Owner { account_id: &account.id, livemode: true, mailbox_id: "", approval_ttl_secs: 0 };
    let thread = platform::new_id(ids::THREAD);
    stage_outbound(ctx, platform::new_id(ids::MESSAGE), &v, &owner, OversightMode::Autonomous, MessageStatus::Queued, MessageKind::SignIn, &thread, None)
}

/// A new session for whoever used a valid sign-in link: `(cookie token, session id)`.
pub async fn start_session(ctx: &Ctx, op: &OperatorRow, user_agent: Option<&str>) -> ApiResult<String> {
    let t = token();
    let csrf = token();
    let id = platform::new_id(SESSION_PREFIX);
    let ua: Option<String> = user_agent.map(|u| u.chars().take(200).collect());
    operators::insert_session(&ctx.db, &NewSession {
        id: &id,
        token_hash: &token_hash(&t),
        operator: op,
        csrf: &csrf,
        user_agent: ua.as_deref(),
        now: ctx.now,
        expires_at: ctx.now + SESSION_TTL_MS,
    })
    .await?;
    audit::record(&ctx.env, audit::Facts {
        account_id: op.account_id.clone(),
        livemode: true,
        actor: format!("human:{}", op.email),
        action: "console.sign_in".into(),
        outcome: "ok".into(),
        detail: Some(id),
        ..Default::default()
    })
    .await;
    Ok(t)
}

/// The session behind a cookie's token, if live.
pub async fn session(db: &Db, cookie_token: &str, now: i64) -> worker::Result<Option<SignedIn>> {
    let found = operators::signed_in(db, &token_hash(cookie_token), now).await?;
    if let Some(s) = &found {
        if now - s.session.last_seen_at > 60_000 {
            operators::touch_session(db, &s.session.id, now).await?;
        }
    }
    Ok(found)
}

/// The API identity of a signed-in operator: their account, the role's scopes, every mailbox,
/// and the mode the console is switched to.
pub fn principal_of(s: &SignedIn, livemode: bool) -> Principal {
    Principal {
        key_id: s.session.operator_id.clone(),
        account_id: s.session.account_id.clone(),
        livemode,
        scopes: s.role.scopes(),
        mailboxes: None,
        default_domain: s.default_domain.clone(),
        human: Some(Human {
            operator_id: s.session.operator_id.clone(),
            email: s.email.clone(),
            role: s.role,
            session_id: s.session.id.clone(),
            csrf: s.session.csrf.clone(),
        }),
    }
}

/// Whether a form's CSRF token is this session's.
pub fn csrf_ok(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| secrets_equal(expected, g))
}

/// Invites `email` as an operator with `role` (an owner's act).
pub async fn invite(ctx: &Ctx, account_id: &str, email: &str, role: Role, invited_by: &str) -> ApiResult<OperatorRow> {
    if operators::by_email(&ctx.db, account_id, email).await?.is_some() {
        return Err(ApiError::conflict("operator_exists", format!("{email} is already an operator of this account")).with_field("email"));
    }
    let op = OperatorRow {
        id: platform::new_id(OPERATOR_PREFIX),
        account_id: account_id.to_string(),
        email: email.to_string(),
        role,
        invited_by: Some(invited_by.to_string()),
        created_at: ctx.now,
        removed_at: None,
    };
    ctx.db.exec(operators::insert(&ctx.db, &op)?).await?;
    if let Some(account) = accounts::get(&ctx.db, account_id).await? {
        email_sign_in_link(ctx, &account, &op).await?;
    }
    Ok(op)
}
