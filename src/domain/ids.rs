//! Opaque, prefixed, time-sortable identifiers (`msg_01J…`): 48 bits of milliseconds and 80
//! random bits in Crockford base32, so ordering by id is ordering by creation (cursors rely on it).

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub const ACCOUNT: &str = "acct";
pub const KEY: &str = "key";
pub const MAILBOX: &str = "mbx";
pub const MESSAGE: &str = "msg";
pub const THREAD: &str = "thr";
pub const EVENT: &str = "evt";
pub const REQUEST: &str = "req";
pub const RULE: &str = "rul";

/// `prefix_` + 26 base32 characters from a millisecond clock and 10 random bytes.
pub fn new_id(prefix: &str, now_ms: u64, random: [u8; 10]) -> String {
    let mut value: u128 = (u128::from(now_ms & 0xFFFF_FFFF_FFFF)) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        let idx = ((value >> (5 * i)) & 31) as usize;
        out.push(ALPHABET[idx] as char);
    }
    out
}

/// True when `id` looks like one of ours with this prefix (cheap guard before a lookup).
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.len() == prefix.len() + 27
        && id.starts_with(prefix)
        && id.as_bytes()[prefix.len()] == b'_'
        && id[prefix.len() + 1..].bytes().all(|c| ALPHABET.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id(MESSAGE, 1_700_000_000_000, [255; 10]);
        let b = new_id(MESSAGE, 1_700_000_000_001, [0; 10]);
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn ids_carry_their_prefix_and_length() {
        let id = new_id(MAILBOX, 5, [7; 10]);
        assert!(id.starts_with("mbx_"));
        assert_eq!(id.len(), 30);
        assert!(has_prefix(&id, MAILBOX));
        assert!(!has_prefix(&id, MESSAGE));
        assert!(!has_prefix("mbx_../../etc", MAILBOX));
    }

    #[test]
    fn different_randomness_gives_different_ids() {
        assert_ne!(new_id(KEY, 1, [1; 10]), new_id(KEY, 1, [2; 10]));
    }
}

/// A deterministic id from a seed (same seed, same id): for records that a retry may write again,
/// such as the `email.decided` event of one message.
pub fn derived_id(prefix: &str, seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(seed.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&d[6..16]);
    let ms = u64::from_be_bytes([0, 0, d[0], d[1], d[2], d[3], d[4], d[5]]);
    new_id(prefix, ms, random)
}
