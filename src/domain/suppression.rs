//! Unsubscribe links and the suppression rule. A marketing message carries `List-Unsubscribe`
//! (one-click https per RFC 8058, and mailto) with a token signed for its one recipient; the
//! suppression list is per account, and a send skips suppressed recipients.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeClaims {
    pub account: String,
    pub address: String,
    pub message_id: String,
    /// The mode of the message the link came in (for the audit entry).
    #[serde(default = "yes")]
    pub live: bool,
}

fn yes() -> bool {
    true
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    m.update(b"unsubscribe v1\n");
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

/// URL-safe token (no expiry: an unsubscribe link must keep working).
pub fn token(secret: &[u8], c: &UnsubscribeClaims) -> String {
    let payload = serde_json::to_vec(c).expect("claims serialize");
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(&mac(secret, &payload)[..16]))
}

pub fn verify(secret: &[u8], token: &str) -> Option<UnsubscribeClaims> {
    let (p, s) = token.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(p).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    let expected = mac(secret, &payload);
    if sig.len() != 16 || !crate::domain::keys::secrets_equal(&crate::domain::keys::hex(&sig), &crate::domain::keys::hex(&expected[..16])) {
        return None;
    }
    serde_json::from_slice(&payload).ok()
}

/// The two headers of RFC 2369 / RFC 8058.
pub fn list_unsubscribe_headers(base_url: &str, mailto_domain: &str, tok: &str) -> Vec<(String, String)> {
    vec![
        (
            "List-Unsubscribe".into(),
            format!("<{}/unsubscribe/{tok}>, <mailto:unsubscribe@{mailto_domain}?subject=unsubscribe%20{tok}>", base_url.trim_end_matches('/')),
        ),
        ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
    ]
}

pub const REASONS: [&str; 4] = ["unsubscribe", "hard_bounce", "complaint", "manual"];

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> UnsubscribeClaims {
        UnsubscribeClaims { account: "acct_1".into(), address: "ada@example.com".into(), message_id: "msg_1".into(), live: false }
    }

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let t = token(b"k", &c());
        assert_eq!(verify(b"k", &t), Some(c()));
        assert_eq!(verify(b"other", &t), None);
        let (p, s) = t.split_once('.').unwrap();
        let mut forged = c();
        forged.address = "boss@example.com".into();
        let fp = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(verify(b"k", &format!("{fp}.{s}")), None);
        assert!(verify(b"k", p).is_none());
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'), "URL-safe");
    }

    #[test]
    fn headers_follow_rfc_8058() {
        let h = list_unsubscribe_headers("https://api.example/", "acme.example", "tok");
        assert_eq!(h[0].1, "<https://api.example/unsubscribe/tok>, <mailto:unsubscribe@acme.example?subject=unsubscribe%20tok>");
        assert_eq!(h[1], ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()));
    }
}
