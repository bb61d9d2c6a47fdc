//! The audit trail as values: an entry, its canonical form, the hash chain
//! (`hash = SHA-256(prev_hash ‖ canonical entry)`) and its verification. Appends are serialised
//! per account and mode by the `AuditChain` Durable Object; storage is `store::audit`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::keys::hex;

/// The `prev_hash` of an account's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub seq: i64,
    pub at: String,
    pub account_id: String,
    pub livemode: bool,
    /// A key id (`key_…`), a human (`human:…`) or the system (`system:delivery`).
    pub actor: String,
    /// The call (`send_email`) or the system action (`delivery.sent`).
    pub action: String,
    pub mailbox: Option<String>,
    pub message_id: Option<String>,
    pub oversight_mode: Option<String>,
    /// `ok`, `replayed`, or the error code that refused the call.
    pub outcome: String,
    pub status: Option<i64>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub ip: Option<String>,
    pub country: Option<String>,
    pub detail: Option<String>,
    /// How the call came in when not over plain HTTP: `mcp` for a tool call. Left out of the
    /// entry (and so of its hash) when absent, so entries from before it hash as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
}

/// The entry as hashed: every field but `prev_hash` and `hash`, as JSON with sorted keys and no
/// spaces (what `json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` gives).
pub fn canonical(e: &AuditEntry) -> String {
    let mut v = serde_json::to_value(e).expect("entries serialize");
    if let Some(obj) = v.as_object_mut() {
        obj.remove("prev_hash");
        obj.remove("hash");
    }
    // serde_json's Map is ordered by key (no preserve_order feature).
    serde_json::to_string(&v).expect("values serialize")
}

pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex(&h.finalize())
}

/// Places `e` after the head `(seq, hash)` of its chain (`None`: the chain is empty).
pub fn seal(mut e: AuditEntry, head: Option<(i64, &str)>) -> AuditEntry {
    let (seq, prev) = head.map_or((0, GENESIS), |(s, h)| (s, h));
    e.seq = seq + 1;
    e.prev_hash = prev.to_string();
    e.hash = chain_hash(&e.prev_hash, &canonical(&e));
    e
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    pub seq: i64,
    pub id: Option<String>,
    pub reason: String,
}

/// Walks a chain in order. Feed it entries page by page; `finish` gives the verdict.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    pub checked: u64,
    pub first_bad: Option<BadEntry>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier { expected_seq: 1, prev_hash: GENESIS.to_string(), checked: 0, first_bad: None }
    }
}

impl Verifier {
    /// Checks the next entry; returns false once the chain is known to be broken.
    pub fn check(&mut self, e: &AuditEntry) -> bool {
        if self.first_bad.is_some() {
            return false;
        }
        self.checked += 1;
        let bad = |seq: i64, id: Option<&str>, reason: String| Some(BadEntry { seq, id: id.map(str::to_string), reason });
        if e.seq != self.expected_seq {
            self.first_bad = bad(self.expected_seq, None, format!("entry {} is missing (the next stored entry is {})", self.expected_seq, e.seq));
        } else if e.prev_hash != self.prev_hash {
            self.first_bad = bad(e.seq, Some(&e.id), "prev_hash does not match the previous entry's hash".into());
        } else if chain_hash(&e.prev_hash, &canonical(e)) != e.hash {
            self.first_bad = bad(e.seq, Some(&e.id), "the entry's content does not match its hash".into());
        }
        if self.first_bad.is_some() {
            return false;
        }
        self.expected_seq += 1;
        self.prev_hash = e.hash.clone();
        true
    }

    /// The verdict, given the head the chain claims (a deleted tail shows up here).
    pub fn finish(mut self, claimed_head_seq: Option<i64>) -> Value {
        if self.first_bad.is_none() {
            if let Some(head) = claimed_head_seq.filter(|h| *h >= self.expected_seq) {
                self.first_bad = Some(BadEntry { seq: self.expected_seq, id: None, reason: format!("entries {}..={head} are missing", self.expected_seq) });
            }
        }
        serde_json::json!({
            "ok": self.first_bad.is_none(),
            "entries_checked": self.checked,
            "first_bad": self.first_bad,
        })
    }
}

/// The most an audit entry keeps of a short field (ids, addresses, codes, the idempotency key,
/// the IP), and of `detail`, in characters. A refused call's raw input (a 4 MB `from`, say)
/// is cut to these, with `…` marking the cut.
pub const MAX_SHORT_FIELD: usize = 256;
pub const MAX_DETAIL: usize = 1000;

fn cut(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The entry with every free-text field cut to its documented size.
pub fn bounded(mut e: AuditEntry) -> AuditEntry {
    let short = |v: Option<String>| v.map(|s| cut(s, MAX_SHORT_FIELD));
    e.actor = cut(e.actor, MAX_SHORT_FIELD);
    e.action = cut(e.action, MAX_SHORT_FIELD);
    e.outcome = cut(e.outcome, MAX_SHORT_FIELD);
    e.mailbox = short(e.mailbox);
    e.message_id = short(e.message_id);
    e.oversight_mode = short(e.oversight_mode);
    e.request_id = short(e.request_id);
    e.idempotency_key = short(e.idempotency_key);
    e.ip = short(e.ip);
    e.country = short(e.country);
    e.detail = e.detail.map(|d| cut(d, MAX_DETAIL));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_fields_are_cut_to_their_documented_size() {
        let e = bounded(AuditEntry {
            mailbox: Some("x".repeat(4_000_000)),
            detail: Some("d".repeat(5000)),
            actor: "k".into(),
            ..Default::default()
        });
        assert_eq!(e.mailbox.as_ref().unwrap().chars().count(), MAX_SHORT_FIELD);
        assert!(e.mailbox.unwrap().ends_with('…'));
        assert_eq!(e.detail.unwrap().chars().count(), MAX_DETAIL);
        assert_eq!(e.actor, "k");
    }

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            id: format!("aud_{n}"),
            seq: 0,
            at: "2026-11-24T12:00:00.000Z".into(),
            account_id: "acct_1".into(),
            livemode: false,
            actor: "key_1".into(),
            action: "send_email".into(),
            mailbox: Some("mbx_1".into()),
            message_id: Some(format!("msg_{n}")),
            oversight_mode: Some("gated_send".into()),
            outcome: "ok".into(),
            status: Some(202),
            request_id: Some("req_1".into()),
            idempotency_key: None,
            ip: Some("127.0.0.1".into()),
            country: None,
            detail: Some("Grüße \"quoted\"".into()),
            via: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = vec![];
        for i in 1..=n {
            let head = out.last().map(|e| (e.seq, e.hash.as_str()));
            let sealed = seal(entry(i), head);
            out.push(sealed);
        }
        out
    }

    fn verify(entries: &[AuditEntry], head: Option<i64>) -> Value {
        let mut v = Verifier::default();
        for e in entries {
            if !v.check(e) {
                break;
            }
        }
        v.finish(head)
    }

    #[test]
    fn canonical_form_sorts_keys_and_leaves_out_the_hashes() {
        let c = canonical(&entry(1));
        assert!(c.starts_with("{\"account_id\":\"acct_1\",\"action\":\"send_email\""), "{c}");
        assert!(!c.contains("prev_hash") && !c.contains("\"hash\""));
        assert!(c.contains("Grüße \\\"quoted\\\""), "non-ASCII stays as is: {c}");
    }

    #[test]
    fn via_is_hashed_when_present_and_absent_otherwise() {
        let plain = canonical(&entry(1));
        assert!(!plain.contains("via"), "an entry without `via` hashes as before: {plain}");
        let mcp = AuditEntry { via: Some("mcp".into()), ..entry(1) };
        assert!(canonical(&mcp).contains("\"via\":\"mcp\""));
        assert_ne!(chain_hash(GENESIS, &plain), chain_hash(GENESIS, &canonical(&mcp)));
    }

    #[test]
    fn the_first_entry_links_to_genesis() {
        let c = chain(1);
        assert_eq!(c[0].seq, 1);
        assert_eq!(c[0].prev_hash, GENESIS);
        assert_eq!(c[0].hash, chain_hash(GENESIS, &canonical(&c[0])));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, Some(5)), serde_json::json!({"ok": true, "entries_checked": 5, "first_bad": null}));
    }

    #[test]
    fn an_edited_entry_is_found_at_that_entry() {
        let mut c = chain(5);
        c[2].outcome = "forged".into();
        let v = verify(&c, Some(5));
        assert_eq!(v["ok"], false);
        assert_eq!(v["first_bad"]["seq"], 3);
        assert_eq!(v["first_bad"]["id"], "aud_3");
    }

    #[test]
    fn a_deleted_entry_is_found_by_its_sequence_number() {
        let mut c = chain(5);
        c.remove(1);
        let v = verify(&c, Some(5));
        assert_eq!(v["first_bad"]["seq"], 2);
    }

    #[test]
    fn a_deleted_tail_is_found_against_the_claimed_head() {
        let c = chain(5);
        let v = verify(&c[..3], Some(5));
        assert_eq!(v["ok"], false);
        assert_eq!(v["first_bad"]["seq"], 4);
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let mut c = chain(4);
        c[1].outcome = "forged".into();
        c[1].hash = chain_hash(&c[1].prev_hash, &canonical(&c[1]));
        let v = verify(&c, Some(4));
        assert_eq!(v["first_bad"]["seq"], 3);
    }
}
