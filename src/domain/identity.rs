//! The `MultiMail-Identity` header: a compact JWS (ES256) over who sent a message and under
//! what oversight, verifiable by anyone with the keys at `/.well-known/jwks.json`.
//! `body_sha256` is the hex SHA-256 of the text body, a NUL byte, and the HTML body (each empty
//! when absent), so a recipient can check the body it received.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::SecretKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::keys::hex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityClaims {
    /// `false` for test-mode mail (the sandbox): signed with the test key, never the live one.
    #[serde(default)]
    pub livemode: bool,
    /// SHA-256 (hex) of the recipients (To, Cc and Bcc addresses, lower-cased, sorted, one per
    /// line): what the human approved it for.
    #[serde(default)]
    pub rcpt_sha256: String,
    pub iss: String,
    /// The sender's address.
    pub sub: String,
    pub mailbox: String,
    pub account: String,
    pub oversight_mode: String,
    /// `approved` when a human approved it, `not_required` when the mode sent it at once.
    pub decision: String,
    pub approved_by: Option<String>,
    pub message_id: String,
    pub body_sha256: String,
    pub iat: i64,
}

pub fn body_sha256(text: Option<&str>, html: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(text.unwrap_or("").as_bytes());
    h.update([0u8]);
    h.update(html.unwrap_or("").as_bytes());
    hex(&h.finalize())
}

/// A signing key: from a private JWK (the `IDENTITY_SIGNING_KEY` secret), or derived from
/// another deployment secret when none is configured (local runs).
pub struct IdentityKey {
    key: SigningKey,
    pub kid: String,
}

impl IdentityKey {
    pub fn from_jwk(jwk: &str) -> Result<Self, String> {
        let secret = SecretKey::from_jwk_str(jwk).map_err(|_| "IDENTITY_SIGNING_KEY is not a P-256 private JWK".to_string())?;
        Ok(Self::from_secret(secret))
    }

    pub fn derived(deployment_secret: &str) -> Self {
        let mut counter = 0u8;
        loop {
            let mut m = Hmac::<Sha256>::new_from_slice(deployment_secret.as_bytes()).expect("any key length");
            m.update(b"multimail identity key v1");
            m.update(&[counter]);
            if let Ok(secret) = SecretKey::from_slice(&m.finalize().into_bytes()) {
                return Self::from_secret(secret);
            }
            counter += 1;
        }
    }

    fn from_secret(secret: SecretKey) -> Self {
        let key = SigningKey::from(secret);
        let kid = thumbprint(&public_jwk(key.verifying_key()));
        IdentityKey { key, kid }
    }

    pub fn public_jwk(&self) -> Value {
        let mut j = public_jwk(self.key.verifying_key());
        j["kid"] = json!(self.kid);
        j["alg"] = json!("ES256");
        j["use"] = json!("sig");
        j
    }

    pub fn sign(&self, claims: &IdentityClaims) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).expect("claims serialize"))
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

fn public_jwk(vk: &VerifyingKey) -> Value {
    let point = vk.to_encoded_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed point")),
        "y": URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed point")),
    })
}

/// RFC 7638 JWK thumbprint (base64url SHA-256 of the required members in order).
fn thumbprint(jwk: &Value) -> String {
    let canonical = format!(r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#, jwk["crv"].as_str().unwrap_or(""), jwk["kty"].as_str().unwrap_or(""), jwk["x"].as_str().unwrap_or(""), jwk["y"].as_str().unwrap_or(""));
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The recipients' hash of the identity claims: addresses lower-cased, sorted, one per line.
pub fn rcpt_sha256<'a>(addresses: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut list: Vec<String> = addresses.into_iter().map(|a| a.trim().to_ascii_lowercase()).collect();
    list.sort();
    list.dedup();
    hex(&sha2::Sha256::digest(list.join("\n").as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verified {
    pub valid: bool,
    pub kid: Option<String>,
    /// Which key verified it: `live` (the production key) or `test` (the sandbox's key),
    /// from the published JWK's `mm_mode`.
    pub key_mode: Option<String>,
    pub header: Option<Value>,
    pub claims: Option<Value>,
    pub reason: Option<String>,
}

/// Checks a compact JWS against a JWKS (`{"keys": [...]}`) and decodes it for a person.
pub fn verify(jws: &str, jwks: &Value) -> Verified {
    let fail = |reason: &str, header: Option<Value>, claims: Option<Value>| Verified {
        valid: false,
        kid: header.as_ref().and_then(|h| h.get("kid")).and_then(Value::as_str).map(str::to_string),
        key_mode: None,
        header,
        claims,
        reason: Some(reason.to_string()),
    };
    let parts: Vec<&str> = jws.trim().split('.').collect();
    if parts.len() != 3 {
        return fail("not a compact JWS (three dot-separated parts)", None, None);
    }
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return fail("the header or the claims are not base64url JSON", None, None);
    };
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return fail("only ES256 is accepted", Some(header), Some(claims));
    }
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("");
    let Some(jwk) = jwks["keys"].as_array().and_then(|ks| ks.iter().find(|k| k["kid"] == kid)) else {
        return fail("no published key has this kid", Some(header), Some(claims));
    };
    let bare = json!({"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"]});
    let Ok(pk) = p256::PublicKey::from_jwk_str(&bare.to_string()) else {
        return fail("the published key is not a P-256 JWK", Some(header), Some(claims));
    };
    let Some(sig) = URL_SAFE_NO_PAD.decode(parts[2]).ok().and_then(|b| Signature::from_slice(&b).ok()) else {
        return fail("the signature is malformed", Some(header), Some(claims));
    };
    let input = format!("{}.{}", parts[0], parts[1]);
    if VerifyingKey::from(pk).verify(input.as_bytes(), &sig).is_err() {
        return fail("the signature does not match", Some(header), Some(claims));
    }
    let key_mode = jwk.get("mm_mode").and_then(Value::as_str).map(str::to_string);
    Verified { valid: true, kid: Some(kid.to_string()), key_mode, header: Some(header), claims: Some(claims), reason: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> IdentityClaims {
        IdentityClaims {
            iss: "https://api.example".into(),
            sub: "agent@acme.multimail.test".into(),
            mailbox: "mbx_1".into(),
            account: "acct_1".into(),
            oversight_mode: "gated_send".into(),
            decision: "approved".into(),
            approved_by: Some("key_h".into()),
            message_id: "msg_1".into(),
            body_sha256: body_sha256(Some("hi"), None),
            iat: 1_764_000_000,
            livemode: true,
            rcpt_sha256: rcpt_sha256(["Ada@Example.com", "bob@example.com"]),
        }
    }

    #[test]
    fn a_signed_header_verifies_against_the_published_key() {
        let k = IdentityKey::derived("secret");
        let jws = k.sign(&claims());
        let v = verify(&jws, &json!({"keys": [k.public_jwk()]}));
        assert!(v.valid, "{v:?}");
        assert_eq!(v.claims.unwrap()["message_id"], "msg_1");
    }

    #[test]
    fn altered_claims_or_another_key_fail() {
        let k = IdentityKey::derived("secret");
        let jws = k.sign(&claims());
        let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
        let mut c = claims();
        c.body_sha256 = body_sha256(Some("altered"), None);
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_string(&c).unwrap());
        assert!(!verify(&parts.join("."), &json!({"keys": [k.public_jwk()]})).valid);
        let other = IdentityKey::derived("other");
        assert!(!verify(&jws, &json!({"keys": [other.public_jwk()]})).valid);
        assert!(!verify("garbage", &json!({"keys": []})).valid);
    }

    #[test]
    fn keys_load_from_a_private_jwk_and_kids_are_thumbprints() {
        let jwk = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
        let k = IdentityKey::from_jwk(jwk).unwrap();
        // RFC 7515 A.3's key; the thumbprint checked independently (Python hashlib over RFC 7638's form).
        assert_eq!(k.kid, "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
        assert!(IdentityKey::from_jwk("{}").is_err());
    }

    #[test]
    fn body_hash_separates_text_from_html() {
        assert_ne!(body_sha256(Some("ab"), Some("c")), body_sha256(Some("a"), Some("bc")));
        assert_eq!(body_sha256(None, None), body_sha256(Some(""), Some("")));
    }

    #[test]
    fn measure_signing_cost() {
        let k = IdentityKey::derived("secret");
        let c = claims();
        let start = std::time::Instant::now();
        for _ in 0..50 {
            let _ = k.sign(&c);
        }
        println!("identity: ES256 sign {:?} per message (native, debug build)", start.elapsed() / 50);
    }
}
