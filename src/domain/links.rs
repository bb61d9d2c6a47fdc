//! Signed approval links: `payload.signature`, both base64url, the signature an HMAC-SHA256 of
//! the payload under a deployment secret. A token names one message (or mode change), one
//! decision and an expiry; it is single-use because the decision it carries can be taken once.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// `msg_…` or `chg_…`
    pub id: String,
    /// `approve` or `reject`
    pub decision: String,
    /// Expiry, epoch milliseconds.
    pub exp: i64,
    /// Who the link was sent to (becomes `decided_by`).
    pub to: String,
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

pub fn sign(secret: &[u8], claims: &LinkClaims) -> String {
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(mac(secret, &payload)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    Malformed,
    BadSignature,
    Expired,
}

pub fn verify(secret: &[u8], token: &str, now_ms: i64) -> Result<LinkClaims, LinkError> {
    let (p, s) = token.split_once('.').ok_or(LinkError::Malformed)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| LinkError::Malformed)?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| LinkError::Malformed)?;
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(&payload);
    m.verify_slice(&sig).map_err(|_| LinkError::BadSignature)?;
    let claims: LinkClaims = serde_json::from_slice(&payload).map_err(|_| LinkError::Malformed)?;
    if claims.decision != "approve" && claims.decision != "reject" {
        return Err(LinkError::Malformed);
    }
    if now_ms >= claims.exp {
        return Err(LinkError::Expired);
    }
    Ok(claims)
}

/// The link secret, derived from the deployment's secret so there is one less to configure.
pub fn derive_secret(deployment_secret: &str) -> Vec<u8> {
    mac(deployment_secret.as_bytes(), b"multimail approval links v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> LinkClaims {
        LinkClaims { id: "msg_1".into(), decision: "approve".into(), exp: 1_000, to: "boss@example.com".into() }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let t = sign(b"k", &claims());
        assert_eq!(verify(b"k", &t, 999), Ok(claims()));
        assert_eq!(verify(b"k", &t, 1_000), Err(LinkError::Expired));
    }

    #[test]
    fn a_changed_decision_or_message_breaks_the_signature() {
        let t = sign(b"k", &claims());
        let (_, sig) = t.split_once('.').unwrap();
        let mut forged = claims();
        forged.decision = "reject".into();
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(verify(b"k", &format!("{p}.{sig}"), 0), Err(LinkError::BadSignature));
        assert_eq!(verify(b"other", &t, 0), Err(LinkError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(verify(b"k", "nope", 0), Err(LinkError::Malformed));
        assert_eq!(verify(b"k", "a.b.c", 0), Err(LinkError::Malformed));
    }
}
