//! Webhook endpoints' credentials at rest: the `whsec_` signing secrets (current and previous)
//! and the URL (an Inngest endpoint's URL carries its event key) are stored sealed with
//! AES-256-GCM under the deployment's `DOMAIN_KEY_SECRET` (as DKIM keys are), each bound to its
//! endpoint. Rows written before sealing (plain text) still read.

use worker::Env;

use crate::app::domains::sealing_key;
use crate::domain::sealed::VERSION;
use crate::platform;
use crate::store::webhooks::EndpointRow;

fn aad(endpoint_id: &str, what: &str) -> String {
    format!("webhook/{endpoint_id}/{what}")
}

/// Seals one value of an endpoint (`what`: `url` or `secret`).
pub fn seal(env: &Env, endpoint_id: &str, what: &str, plain: &str) -> worker::Result<String> {
    Ok(sealing_key(env)?.seal(plain.as_bytes(), &aad(endpoint_id, what), platform::random_bytes()))
}

fn open(env: &Env, endpoint_id: &str, what: &str, stored: &str) -> worker::Result<String> {
    if !stored.starts_with(VERSION) {
        return Ok(stored.to_string()); // written before sealing
    }
    let plain = sealing_key(env)?
        .open(stored, &aad(endpoint_id, what))
        .ok_or_else(|| worker::Error::RustError(format!("webhook {endpoint_id}: its {what} does not open: was DOMAIN_KEY_SECRET changed?")))?;
    String::from_utf8(plain).map_err(|_| worker::Error::RustError("a sealed webhook value is not UTF-8".into()))
}

/// The endpoint with its URL and secrets in the clear, for use (never for answers: lists mask
/// the URL and never show a secret).
pub fn opened(env: &Env, mut e: EndpointRow) -> worker::Result<EndpointRow> {
    e.url = open(env, &e.id, "url", &e.url)?;
    if let Some(s) = &e.secret {
        e.secret = Some(open(env, &e.id, "secret", s)?);
    }
    if let Some(s) = &e.previous_secret {
        e.previous_secret = Some(open(env, &e.id, "secret", s)?);
    }
    Ok(e)
}
