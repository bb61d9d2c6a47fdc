//! The sender identity keys of this deployment and the `MultiMail-Identity` header of each
//! outbound message. Keys: the `IDENTITY_SIGNING_KEY` secret (a P-256 private JWK), with
//! `IDENTITY_SIGNING_KEY_PREVIOUS` still published after a rotation; without one (local runs),
//! a key derived from ADMIN_TOKEN.

use serde_json::{json, Value};
use worker::Env;

use crate::domain::address::Recipient;
use crate::domain::approval::Status;
use crate::domain::delivery::OutboundEmail;
use crate::domain::identity::{body_sha256, IdentityClaims, IdentityKey};
use crate::platform;
use crate::store::messages::MessageWithMailbox;

pub const HEADER: &str = "MultiMail-Identity";

pub fn current_key(env: &Env) -> worker::Result<IdentityKey> {
    if let Some(jwk) = platform::secret(env, "IDENTITY_SIGNING_KEY") {
        return IdentityKey::from_jwk(&jwk).map_err(worker::Error::RustError);
    }
    let fallback = platform::secret(env, "ADMIN_TOKEN").ok_or("neither IDENTITY_SIGNING_KEY nor ADMIN_TOKEN is set")?;
    Ok(IdentityKey::derived(&fallback))
}

/// `{"keys": [current, previous?]}`, public parts only.
pub fn jwks(env: &Env) -> worker::Result<Value> {
    let mut keys = vec![current_key(env)?.public_jwk()];
    if let Some(prev) = platform::secret(env, "IDENTITY_SIGNING_KEY_PREVIOUS") {
        match IdentityKey::from_jwk(&prev) {
            Ok(k) => keys.push(k.public_jwk()),
            Err(e) => worker::console_error!("IDENTITY_SIGNING_KEY_PREVIOUS: {e}"),
        }
    }
    Ok(json!({ "keys": keys }))
}

pub fn issuer(env: &Env) -> String {
    platform::var(env, "PUBLIC_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:8787".into())
}

/// Signs the identity of one message as it leaves.
pub fn sign_for(env: &Env, m: &MessageWithMailbox, email: &OutboundEmail, now_ms: i64) -> worker::Result<String> {
    Ok(current_key(env)?.sign(&claims_for(env, m, email, now_ms)))
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
    };
    claims
}
