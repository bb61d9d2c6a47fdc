//! The sender identity keys of this deployment and the `MultiMail-Identity` header of each
//! outbound message. Live mail is signed with `IDENTITY_SIGNING_KEY` (a P-256 private JWK;
//! `IDENTITY_SIGNING_KEY_PREVIOUS` stays published after a rotation), test mail with its own
//! `IDENTITY_TEST_SIGNING_KEY`, published under its own `kid` and marked `mm_mode: test`. Nothing
//! is derived from another secret: a deployment without the key cannot send (503
//! `not_configured`), and `make dev` generates both into `.dev.vars`.

use serde_json::{json, Value};
use worker::Env;

use crate::domain::address::Recipient;
use crate::domain::approval::Status;
use crate::domain::delivery::OutboundEmail;
use crate::app::webcrypto;
use crate::domain::identity::{body_sha256, check, compact, rcpt_sha256, IdentityClaims, IdentityKey, Verified};
use crate::http::ApiError;
use crate::platform;
use crate::store::messages::MessageWithMailbox;

pub const HEADER: &str = "MultiMail-Identity";

fn secret_name(livemode: bool) -> &'static str {
    if livemode { "IDENTITY_SIGNING_KEY" } else { "IDENTITY_TEST_SIGNING_KEY" }
}

/// The key that signs mail of this mode.
pub fn current_key(env: &Env, livemode: bool) -> worker::Result<IdentityKey> {
    let name = secret_name(livemode);
    let jwk = platform::secret(env, name).ok_or_else(|| worker::Error::RustError(format!("{name} is not set")))?;
    IdentityKey::from_jwk(&jwk).map_err(|e| worker::Error::RustError(format!("{name}: {e}")))
}

/// 503 `not_configured` when mail of this mode could not be signed (checked before a send is
/// accepted, so nothing is stored that could never leave).
pub fn require_key(env: &Env, livemode: bool) -> Result<(), ApiError> {
    match platform::secret(env, secret_name(livemode)) {
        Some(_) => Ok(()),
        None => Err(ApiError::new(503, "not_configured", format!("{} is not set on this deployment: mail cannot be signed", secret_name(livemode)))),
    }
}

fn published(k: &IdentityKey, mode: &str) -> Value {
    let mut j = k.public_jwk();
    j["mm_mode"] = json!(mode);
    j
}

/// `{"keys": [live, previous?, test]}`, public parts only, each marked with its mode.
pub fn jwks(env: &Env) -> worker::Result<Value> {
    let mut keys = vec![];
    match current_key(env, true) {
        Ok(k) => keys.push(published(&k, "live")),
        Err(e) => worker::console_error!("identity: {e}"),
    }
    if let Some(prev) = platform::secret(env, "IDENTITY_SIGNING_KEY_PREVIOUS") {
        match IdentityKey::from_jwk(&prev) {
            Ok(k) => keys.push(published(&k, "live")),
            Err(e) => worker::console_error!("IDENTITY_SIGNING_KEY_PREVIOUS: {e}"),
        }
    }
    if let Ok(k) = current_key(env, false) {
        keys.push(published(&k, "test"));
    }
    Ok(json!({ "keys": keys }))
}

pub fn issuer(env: &Env) -> String {
    platform::var(env, "PUBLIC_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:8787".into())
}

/// Signs the identity of one message as it leaves (ES256 through WebCrypto).
pub async fn sign_for(env: &Env, m: &MessageWithMailbox, email: &OutboundEmail, now_ms: i64) -> worker::Result<String> {
    let key = current_key(env, m.msg.is_live())?;
    let input = key.signing_input(&claims_for(env, m, email, now_ms));
    let signature = webcrypto::es256_sign(key.private_jwk(), input.as_bytes()).await?;
    Ok(compact(&input, &signature))
}

/// Checks an identity header against this deployment's published keys.
pub async fn verify(env: &Env, jws: &str) -> worker::Result<Verified> {
    match check(jws, &jwks(env)?) {
        Err(verdict) => Ok(verdict),
        Ok(c) => {
            let ok = webcrypto::es256_verify(&c.public_jwk, c.signing_input.as_bytes(), &c.signature).await?;
            Ok(c.verdict(ok))
        }
    }
}

/// The claims a message's identity header carries (what the console shows before approving).
pub fn claims_for(env: &Env, m: &MessageWithMailbox, email: &OutboundEmail, now_ms: i64) -> IdentityClaims {
    let sender = Recipient::parse(&email.from).map(|r| r.address.to_string()).unwrap_or_else(|_| email.from.clone());
    let approved = m.msg.decision.as_deref() == Some(Status::Approved.as_str());
    let claims = IdentityClaims {
        iss: issuer(env),
        sub: sender,
        mailbox: m.mailbox_address.clone(),
        account: m.msg.account_id.clone(),
        oversight_mode: m.msg.oversight_mode.as_str().to_string(),
        decision: if approved { Status::Approved.as_str().into() } else { "not_required".into() },
        approved_by: if approved { m.msg.decided_by.clone() } else { None },
        message_id: m.msg.id.clone(),
        body_sha256: body_sha256(email.text.as_deref(), email.html.as_deref()),
        iat: now_ms / 1000,
        reviewed: crate::domain::disclosure::reviewed(approved, m.msg.edited_by.is_some()).into(),
        edited_by: if approved { m.msg.edited_by.clone() } else { None },
        livemode: m.msg.is_live(),
        rcpt_sha256: rcpt_sha256(email.to.iter().chain(&email.cc).chain(&email.bcc).map(|r| {
            Recipient::parse(r).map(|x| x.address.to_string()).unwrap_or_else(|_| r.clone())
        }).collect::<Vec<_>>().iter().map(String::as_str)),
    };
    claims
}
