//! Secrets at rest (the DKIM private keys): AES-256-GCM under a key derived with HKDF-SHA256
//! from a deployment secret, bound to what they belong to (the associated data, e.g.
//! `dom_…/mm1r`) so a sealed value cannot be moved to another row. Sealed form:
//! `v1.<base64url(nonce ‖ ciphertext ‖ tag)>`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hkdf::Hkdf;
use sha2::Sha256;

pub const VERSION: &str = "v1.";
const SALT: &[u8] = b"multimail-edge sealed secrets";
const INFO: &[u8] = b"dkim private keys v1";

/// The AES key of a deployment secret.
pub struct SealingKey(Aes256Gcm);

impl SealingKey {
    pub fn derive(deployment_secret: &str) -> SealingKey {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(SALT), deployment_secret.as_bytes()).expand(INFO, &mut key).expect("32 bytes is a valid HKDF length");
        SealingKey(Aes256Gcm::new(&key.into()))
    }

    /// `nonce` must be fresh random bytes for every call.
    pub fn seal(&self, plaintext: &[u8], aad: &str, nonce: [u8; 12]) -> String {
        let ct = self.0.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() }).expect("in-memory AES-GCM cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// `None` when the value was altered, sealed for other associated data, or under another
    /// deployment secret.
    pub fn open(&self, sealed: &str, aad: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(VERSION)?).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        self.0.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_what_it_sealed() {
        let k = SealingKey::derive("deployment secret");
        let s = k.seal(b"private key bytes", "dom_1/mm1e", [7; 12]);
        assert!(s.starts_with("v1."));
        assert!(!s.contains("private"));
        assert_eq!(k.open(&s, "dom_1/mm1e").as_deref(), Some(&b"private key bytes"[..]));
    }

    #[test]
    fn refuses_another_secret_another_row_or_an_altered_value() {
        let k = SealingKey::derive("deployment secret");
        let s = k.seal(b"private key bytes", "dom_1/mm1e", [7; 12]);
        assert!(SealingKey::derive("another secret").open(&s, "dom_1/mm1e").is_none());
        assert!(k.open(&s, "dom_2/mm1e").is_none(), "bound to its row");
        let mut altered = s.clone().into_bytes();
        let i = altered.len() - 5;
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        assert!(k.open(std::str::from_utf8(&altered).unwrap(), "dom_1/mm1e").is_none());
        assert!(k.open("v1.AAAA", "dom_1/mm1e").is_none());
        assert!(k.open("plain", "dom_1/mm1e").is_none());
    }

    #[test]
    fn a_fresh_nonce_gives_a_different_ciphertext() {
        let k = SealingKey::derive("s");
        assert_ne!(k.seal(b"x", "a", [1; 12]), k.seal(b"x", "a", [2; 12]));
    }
}
