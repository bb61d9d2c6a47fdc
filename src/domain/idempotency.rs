//! Idempotency: one key, one outcome. The first request with a key reserves it; a repeat with
//! the same fingerprint replays the stored answer, a repeat with another body is refused, and a
//! repeat while the first still runs is told to come back. Storage lives in `store::idempotency`.

use sha2::{Digest, Sha256};

use super::keys::hex;

pub const MAX_KEY_LEN: usize = 255;
pub const TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// A reservation older than this whose request never finished (the isolate died) may be taken over.
pub const STALE_RESERVATION_MS: i64 = 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1–255 printable ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_KEY_LEN {
            return Err(format!("an idempotency key must be 1 to {MAX_KEY_LEN} characters"));
        }
        if !raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err("an idempotency key may hold only printable ASCII characters".into());
        }
        Ok(IdempotencyKey(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 over method, path and the canonical JSON of the body (key order and whitespace do not
/// change it; the `idempotency_key` field itself is left out).
pub fn fingerprint(method: &str, path: &str, body: &serde_json::Value) -> String {
    fingerprint_for("", method, path, body)
}

/// The fingerprint of a request made by `caller` (its API key's id): a record is bound to the
/// key that made it, so another key of the account presenting the same Idempotency-Key is a
/// different request (422), never a replay of someone else's answer.
pub fn fingerprint_for(caller: &str, method: &str, path: &str, body: &serde_json::Value) -> String {
    let [one] = fingerprints_for([caller], method, path, body);
    one
}

/// `fingerprint_for` for several callers at once, in one pass over the body and without a copy
/// of it (a `send_email` body may be 25 MB).
pub fn fingerprints_for<const N: usize>(callers: [&str; N], method: &str, path: &str, body: &serde_json::Value) -> [String; N] {
    let mut hashers: [Sha256; N] = std::array::from_fn(|i| {
        let mut h = Sha256::new();
        if !callers[i].is_empty() {
            h.update(callers[i].as_bytes());
            h.update(b"\n");
        }
        h.update(method.as_bytes());
        h.update(b"\n");
        h.update(path.as_bytes());
        h.update(b"\n");
        h
    });
    // serde_json's Map is a BTreeMap (no preserve_order feature), so this is sorted; the bytes
    // are `serde_json::to_vec` of the body without its `idempotency_key`.
    let mut tee = Tee(&mut hashers);
    let written = match body.as_object() {
        Some(obj) => (|| -> std::io::Result<()> {
            use std::io::Write;
            tee.write_all(b"{")?;
            let mut first = true;
            for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "idempotency_key") {
                if !first {
                    tee.write_all(b",")?;
                }
                first = false;
                serde_json::to_writer(&mut tee, k)?;
                tee.write_all(b":")?;
                serde_json::to_writer(&mut tee, v)?;
            }
            tee.write_all(b"}")
        })(),
        None => serde_json::to_writer(&mut tee, body).map_err(std::io::Error::from),
    };
    debug_assert!(written.is_ok(), "hashing cannot fail");
    hashers.map(|h| hex(&h.finalize()))
}

/// Writes into every hasher at once.
struct Tee<'a, const N: usize>(&'a mut [Sha256; N]);

impl<const N: usize> std::io::Write for Tee<'_, N> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for h in self.0.iter_mut() {
            h.update(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What is stored under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub fingerprint: String,
    pub created_at: i64,
    /// `None` while the first request runs.
    pub response: Option<(u16, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Same request, finished: answer exactly as the first time.
    Replay { status: u16, body: String },
    /// Same key, other request: 422 `idempotency_key_reused`.
    Mismatch,
    /// The first request has not finished: 409 with `Retry-After`.
    InProgress,
    /// The reservation was abandoned (the request died); the caller may take it over.
    Stale,
}

/// Decides what a request that lost the reservation race gets.
pub fn on_existing(record: &StoredRecord, fingerprint: &str, now_ms: i64) -> Replay {
    if record.fingerprint != fingerprint {
        return Replay::Mismatch;
    }
    match &record.response {
        Some((status, body)) => Replay::Replay { status: *status, body: body.clone() },
        None if now_ms - record.created_at > STALE_RESERVATION_MS => Replay::Stale,
        None => Replay::InProgress,
    }
}

/// Which answers are kept for replay: not validation (400), auth (401), rate limits (429) or
/// server failures (5xx), so a corrected or later retry runs afresh.
pub fn is_stored(status: u16) -> bool {
    !matches!(status, 400 | 401 | 413 | 415 | 429) && status < 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_the_hash_of_the_body_without_its_key_as_before() {
        let body = serde_json::json!({"to": ["a@b.c"], "idempotency_key": "k1", "attachments": [{"content_base64": "aGk=\"x"}], "n": 1.5, "z": null});
        // The earlier formula: a copy of the body without the key, serialized whole.
        let old = |caller: &str| {
            let mut b = body.clone();
            b.as_object_mut().unwrap().remove("idempotency_key");
            let mut h = Sha256::new();
            h.update(format!("{caller}\nPOST\n/send_email\n").as_bytes());
            h.update(serde_json::to_vec(&b).unwrap());
            hex(&h.finalize())
        };
        assert_eq!(fingerprints_for(["key_1", "hash"], "POST", "/send_email", &body), [old("key_1"), old("hash")]);
        assert_eq!(fingerprint_for("key_1", "POST", "/send_email", &body), old("key_1"));
        let mut h = Sha256::new();
        h.update(b"POST\n/x\n[1,2]");
        assert_eq!(fingerprint_for("", "POST", "/x", &serde_json::json!([1, 2])), hex(&h.finalize()));
    }
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_whitespace_and_the_key_field() {
        let a = fingerprint("POST", "/send_email", &json!({"to": "a@b.co", "subject": "hi"}));
        let b = fingerprint(
            "POST",
            "/send_email",
            &serde_json::from_str(r#"{ "subject":"hi",  "to":"a@b.co", "idempotency_key": "k" }"#).unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn fingerprint_changes_with_body_or_path() {
        let a = fingerprint("POST", "/send_email", &json!({"subject": "hi"}));
        assert_ne!(fingerprint_for("key_a", "POST", "/send_email", &json!({"subject": "hi"})), fingerprint_for("key_b", "POST", "/send_email", &json!({"subject": "hi"})), "bound to the key");
        assert_ne!(a, fingerprint("POST", "/send_email", &json!({"subject": "ho"})));
        assert_ne!(a, fingerprint("POST", "/reply_email", &json!({"subject": "hi"})));
    }

    #[test]
    fn keys_are_1_to_255_printable_characters() {
        assert!(IdempotencyKey::parse("welcome-42-evt_1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("line\nbreak").is_err());
        assert!(IdempotencyKey::parse("naïve").is_err());
    }

    fn record(response: Option<(u16, String)>) -> StoredRecord {
        StoredRecord { fingerprint: "f".into(), created_at: 1_000, response }
    }

    #[test]
    fn replays_a_finished_request_with_the_same_body() {
        let r = record(Some((202, "{\"id\":\"msg_1\"}".into())));
        assert_eq!(on_existing(&r, "f", 2_000), Replay::Replay { status: 202, body: "{\"id\":\"msg_1\"}".into() });
    }

    #[test]
    fn refuses_the_same_key_with_another_body() {
        let r = record(Some((202, "{}".into())));
        assert_eq!(on_existing(&r, "g", 2_000), Replay::Mismatch);
        assert_eq!(on_existing(&record(None), "g", 2_000), Replay::Mismatch);
    }

    #[test]
    fn tells_a_concurrent_repeat_to_wait_until_the_reservation_is_stale() {
        assert_eq!(on_existing(&record(None), "f", 2_000), Replay::InProgress);
        assert_eq!(on_existing(&record(None), "f", 1_000 + STALE_RESERVATION_MS + 1), Replay::Stale);
    }

    #[test]
    fn does_not_store_validation_auth_rate_limit_or_server_errors() {
        for s in [400, 401, 413, 415, 429, 500, 503] {
            assert!(!is_stored(s), "{s}");
        }
        for s in [200, 201, 202, 403, 404, 409, 422] {
            assert!(is_stored(s), "{s}");
        }
    }
}
