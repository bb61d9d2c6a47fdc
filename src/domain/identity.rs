//! The `MultiMail-Identity` header: a compact JWS (ES256) over who sent a message and under
//! what oversight, verifiable by anyone with the keys at `/.well-known/jwks.json`. This module
//! builds and takes apart the JWS; the elliptic-curve operations themselves are the runtime's
//! WebCrypto (`app::webcrypto`): `signing_input` → sign → `compact`, and `check` → verify →
//! `Check::verdict`.
//! `body_sha256` is the hex SHA-256 of the text body, a NUL byte, and the HTML body (each empty
//! when absent), so a recipient can check the body it received.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
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
    /// Whether a human reviewed the message: `approved`, `edited` (changed, then approved), or
    /// `none` (sent without review). With the mailbox's AI disclosure, what a recipient's tools
    /// can show (`domain::disclosure`).
    #[serde(default)]
    pub reviewed: String,
    /// Who changed the message before approving it (absent when nobody did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_by: Option<String>,
}

pub fn body_sha256(text: Option<&str>, html: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(text.unwrap_or("").as_bytes());
    h.update([0u8]);
    h.update(html.unwrap_or("").as_bytes());
    hex(&h.finalize())
}

/// A signing key: a P-256 private JWK (the `IDENTITY_SIGNING_KEY` secret), checked for shape
/// here and used through WebCrypto.
pub struct IdentityKey {
    private: Value,
    pub kid: String,
}

fn coordinate(jwk: &Value, name: &str) -> Result<String, String> {
    let v = jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("the JWK has no `{name}`"))?;
    match URL_SAFE_NO_PAD.decode(v) {
        Ok(b) if b.len() == 32 => Ok(v.to_string()),
        _ => Err(format!("the JWK's `{name}` is not 32 bytes of base64url")),
    }
}

impl IdentityKey {
    pub fn from_jwk(jwk: &str) -> Result<Self, String> {
        let not_p256 = || "IDENTITY_SIGNING_KEY is not a P-256 private JWK".to_string();
        let v: Value = serde_json::from_str(jwk).map_err(|_| not_p256())?;
        if v.get("kty").and_then(Value::as_str) != Some("EC") || v.get("crv").and_then(Value::as_str) != Some("P-256") {
            return Err(not_p256());
        }
        let (x, y, d) = (coordinate(&v, "x")?, coordinate(&v, "y")?, coordinate(&v, "d")?);
        let private = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "d": d});
        let kid = thumbprint(&private);
        Ok(IdentityKey { private, kid })
    }

    /// The private JWK, for WebCrypto's `importKey("jwk", …)`.
    pub fn private_jwk(&self) -> &Value {
        &self.private
    }

    pub fn public_jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.private["x"], "y": self.private["y"], "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    /// What the signature covers: `base64url(header).base64url(claims)`.
    pub fn signing_input(&self, claims: &IdentityClaims) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).expect("claims serialize"))
        )
    }
}

/// The compact JWS: the signing input and its 64-byte `r‖s` signature.
pub fn compact(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
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

/// A JWS taken apart against a JWKS, waiting for its signature check.
pub struct Check {
    /// The published key (`kty`, `crv`, `x`, `y`) to verify with.
    pub public_jwk: Value,
    pub signing_input: String,
    /// The 64-byte `r‖s`.
    pub signature: Vec<u8>,
    kid: String,
    key_mode: Option<String>,
    header: Value,
    claims: Value,
}

impl Check {
    /// The verdict once the signature has been checked.
    pub fn verdict(self, signature_ok: bool) -> Verified {
        if !signature_ok {
            return Verified { valid: false, kid: Some(self.kid), key_mode: None, header: Some(self.header), claims: Some(self.claims), reason: Some("the signature does not match".into()) };
        }
        Verified { valid: true, kid: Some(self.kid), key_mode: self.key_mode, header: Some(self.header), claims: Some(self.claims), reason: None }
    }
}

/// Takes a compact JWS apart and finds its key in a JWKS (`{"keys": [...]}`): what is left is
/// the signature check (`Err`: the verdict already, for anything malformed or unknown).
pub fn check(jws: &str, jwks: &Value) -> Result<Check, Verified> {
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
        return Err(fail("not a compact JWS (three dot-separated parts)", None, None));
    }
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Err(fail("the header or the claims are not base64url JSON", None, None));
    };
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(fail("only ES256 is accepted", Some(header), Some(claims)));
    }
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(jwk) = jwks["keys"].as_array().and_then(|ks| ks.iter().find(|k| k["kid"] == kid.as_str())) else {
        return Err(fail("no published key has this kid", Some(header), Some(claims)));
    };
    let (Ok(x), Ok(y)) = (coordinate(jwk, "x"), coordinate(jwk, "y")) else {
        return Err(fail("the published key is not a P-256 JWK", Some(header), Some(claims)));
    };
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err(fail("the published key is not a P-256 JWK", Some(header), Some(claims)));
    }
    let Some(signature) = URL_SAFE_NO_PAD.decode(parts[2]).ok().filter(|s| s.len() == 64) else {
        return Err(fail("the signature is malformed", Some(header), Some(claims)));
    };
    Ok(Check {
        public_jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
        signing_input: format!("{}.{}", parts[0], parts[1]),
        signature,
        key_mode: jwk.get("mm_mode").and_then(Value::as_str).map(str::to_string),
        kid,
        header,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

    // WebCrypto's part, natively: p256 signs and verifies in these tests only.
    fn derived(secret: &str) -> (IdentityKey, SigningKey) {
        let mut counter = 0u8;
        loop {
            let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
            m.update(b"multimail identity key v1");
            m.update(&[counter]);
            if let Ok(sk) = p256::SecretKey::from_slice(&m.finalize().into_bytes()) {
                let k = IdentityKey::from_jwk(&sk.to_jwk_string()).expect("a P-256 JWK");
                return (k, SigningKey::from(sk));
            }
            counter += 1;
        }
    }

    fn sign(k: &(IdentityKey, SigningKey), claims: &IdentityClaims) -> String {
        let input = k.0.signing_input(claims);
        let sig: Signature = k.1.sign(input.as_bytes());
        compact(&input, &sig.to_bytes())
    }

    fn verify(jws: &str, jwks: &Value) -> Verified {
        match check(jws, jwks) {
            Err(v) => v,
            Ok(c) => {
                let pk = p256::PublicKey::from_jwk_str(&c.public_jwk.to_string()).expect("a public JWK");
                let ok = Signature::from_slice(&c.signature).is_ok_and(|s| VerifyingKey::from(pk).verify(c.signing_input.as_bytes(), &s).is_ok());
                c.verdict(ok)
            }
        }
    }

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
            reviewed: "approved".into(),
            edited_by: None,
        }
    }

    #[test]
    fn a_signed_header_verifies_against_the_published_key() {
        let k = derived("secret");
        let jws = sign(&k, &claims());
        let v = verify(&jws, &json!({"keys": [k.0.public_jwk()]}));
        assert!(v.valid, "{v:?}");
        assert_eq!(v.claims.unwrap()["message_id"], "msg_1");
    }

    #[test]
    fn altered_claims_or_another_key_fail() {
        let k = derived("secret");
        let jws = sign(&k, &claims());
        let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
        let mut c = claims();
        c.body_sha256 = body_sha256(Some("altered"), None);
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_string(&c).unwrap());
        assert!(!verify(&parts.join("."), &json!({"keys": [k.0.public_jwk()]})).valid);
        let other = derived("other");
        assert!(!verify(&jws, &json!({"keys": [other.0.public_jwk()]})).valid);
        // A key published under the signer's kid but with other coordinates.
        let mut forged = other.0.public_jwk();
        forged["kid"] = json!(k.0.kid);
        let v = verify(&jws, &json!({"keys": [forged]}));
        assert_eq!((v.valid, v.reason.as_deref()), (false, Some("the signature does not match")));
        assert!(!verify("garbage", &json!({"keys": []})).valid);
    }

    #[test]
    fn keys_load_from_a_private_jwk_and_kids_are_thumbprints() {
        let jwk = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
        let k = IdentityKey::from_jwk(jwk).unwrap();
        // RFC 7515 A.3's key; the thumbprint checked independently (Python hashlib over RFC 7638's form).
        assert_eq!(k.kid, "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
        assert!(IdentityKey::from_jwk("{}").is_err());
        assert!(IdentityKey::from_jwk(&jwk.replace("P-256", "P-384")).is_err());
        assert!(IdentityKey::from_jwk(&jwk.replace("\"d\":\"jpsQ", "\"d\":\"Q")).is_err(), "a short d is refused");
        // The public JWK carries no private part.
        assert!(k.public_jwk().get("d").is_none());
    }

    #[test]
    fn body_hash_separates_text_from_html() {
        assert_ne!(body_sha256(Some("ab"), Some("c")), body_sha256(Some("a"), Some("bc")));
        assert_eq!(body_sha256(None, None), body_sha256(Some(""), Some("")));
    }
}
