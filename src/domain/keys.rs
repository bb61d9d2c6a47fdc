//! API keys and what they allow. A key is `mm_live_`/`mm_test_` and 32 random bytes
//! (base64url), shown once and stored only as its SHA-256; scopes never imply one another.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::DomainError;

pub const LIVE_PREFIX: &str = "mm_live_";
pub const TEST_PREFIX: &str = "mm_test_";
const SECRET_CHARS: usize = 43; // 32 bytes in unpadded base64url

/// A presented or freshly minted key. Debug never prints the secret.
pub struct ApiKeySecret {
    secret: String,
    livemode: bool,
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

impl ApiKeySecret {
    pub fn generate(livemode: bool, random: [u8; 32]) -> Self {
        let prefix = if livemode { LIVE_PREFIX } else { TEST_PREFIX };
        ApiKeySecret { secret: format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random)), livemode }
    }

    /// Parses an `Authorization` header value or a bare key. `None` for anything that is not
    /// shaped like one of our keys (so no database lookup is spent on it).
    pub fn from_bearer(header: &str) -> Option<Self> {
        let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?.trim();
        Self::parse(token)
    }

    pub fn parse(token: &str) -> Option<Self> {
        let (livemode, rest) = if let Some(r) = token.strip_prefix(LIVE_PREFIX) {
            (true, r)
        } else {
            (false, token.strip_prefix(TEST_PREFIX)?)
        };
        let well_formed = rest.len() == SECRET_CHARS
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| ApiKeySecret { secret: token.to_string(), livemode })
    }

    pub fn livemode(&self) -> bool {
        self.livemode
    }

    /// The whole secret: only for the one creation answer.
    pub fn reveal(&self) -> &str {
        &self.secret
    }

    pub fn hash_hex(&self) -> String {
        hex(&Sha256::digest(self.secret.as_bytes()))
    }

    /// `mm_live_AbCd` — enough to recognise a key in a list, not to use it.
    pub fn display_prefix(&self) -> &str {
        &self.secret[..LIVE_PREFIX.len() + 4]
    }

    pub fn last4(&self) -> &str {
        &self.secret[self.secret.len() - 4..]
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Constant-time equality for secrets of any length (the length itself is not secret).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    Send,
    Oversight,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Send, Scope::Oversight, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Send => "send",
            Scope::Oversight => "oversight",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

/// A validated set of scopes: non-empty, no duplicates, never `send` with `oversight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Scopes, DomainError> {
        if items.is_empty() {
            return Err(DomainError::invalid("scopes", "a key needs at least one scope"));
        }
        let mut scopes = Vec::new();
        for item in items {
            let s = item.as_ref();
            let scope = Scope::parse(s).ok_or_else(|| {
                DomainError::invalid("scopes", format!("`{s}` is not a scope (read, send, oversight, admin)"))
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        scopes.sort();
        let scopes = Scopes(scopes);
        if scopes.has(Scope::Send) && scopes.has(Scope::Oversight) {
            return Err(DomainError::ConflictingScopes);
        }
        Ok(scopes)
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }

    /// Stored form: `read,send`.
    pub fn to_csv(&self) -> String {
        self.names().join(",")
    }

    pub fn from_csv(csv: &str) -> Scopes {
        Scopes(csv.split(',').filter_map(Scope::parse).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_carry_mode_prefix_and_32_random_bytes() {
        let k = ApiKeySecret::generate(false, [9; 32]);
        assert!(k.reveal().starts_with("mm_test_"));
        assert_eq!(k.reveal().len(), 8 + 43);
        assert!(ApiKeySecret::parse(k.reveal()).is_some());
        assert!(ApiKeySecret::generate(true, [9; 32]).reveal().starts_with("mm_live_"));
    }

    #[test]
    fn parses_bearer_headers_and_rejects_other_shapes() {
        let k = ApiKeySecret::generate(true, [1; 32]);
        let parsed = ApiKeySecret::from_bearer(&format!("Bearer {}", k.reveal())).unwrap();
        assert!(parsed.livemode());
        assert_eq!(parsed.hash_hex(), k.hash_hex());
        assert!(ApiKeySecret::from_bearer(k.reveal()).is_none(), "needs the Bearer scheme");
        assert!(ApiKeySecret::from_bearer("Bearer mm_live_short").is_none());
        assert!(ApiKeySecret::from_bearer("Bearer sk_live_0000000000000000000000000000000000000000000").is_none());
    }

    #[test]
    fn hash_is_sha256_hex_of_the_whole_key() {
        let k = ApiKeySecret::generate(false, [0; 32]);
        let h = k.hash_hex();
        assert_eq!(h.len(), 64);
        assert_ne!(h, ApiKeySecret::generate(false, [1; 32]).hash_hex());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = ApiKeySecret::generate(true, [3; 32]);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.reveal()[12..]));
    }

    #[test]
    fn display_prefix_and_last4() {
        let k = ApiKeySecret::generate(true, [3; 32]);
        assert_eq!(k.display_prefix().len(), 12);
        assert!(k.reveal().ends_with(k.last4()));
    }

    #[test]
    fn rejects_send_with_oversight() {
        assert_eq!(Scopes::parse(&["send", "oversight"]), Err(DomainError::ConflictingScopes));
    }

    #[test]
    fn rejects_unknown_and_empty_scopes() {
        assert!(Scopes::parse(&["superuser"]).is_err());
        assert!(Scopes::parse::<&str>(&[]).is_err());
    }

    #[test]
    fn scopes_do_not_imply_each_other() {
        let s = Scopes::parse(&["admin"]).unwrap();
        assert!(s.has(Scope::Admin));
        assert!(!s.has(Scope::Read) && !s.has(Scope::Send) && !s.has(Scope::Oversight));
    }

    #[test]
    fn scopes_round_trip_through_storage() {
        let s = Scopes::parse(&["send", "read", "admin", "read"]).unwrap();
        assert_eq!(s.to_csv(), "read,send,admin");
        assert_eq!(Scopes::from_csv(&s.to_csv()), s);
    }

    #[test]
    fn secrets_compare_in_constant_time_semantics() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}
