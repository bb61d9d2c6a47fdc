//! What providers report after accepting a message (delivered, bounced, complained), read from
//! Postmark's and Resend's webhook bodies, and the Svix signature Resend signs them with.

use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::Value;

use super::message::MessageStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Delivered,
    Bounced { hard: bool },
    Complained,
}

impl Kind {
    pub fn status(&self) -> MessageStatus {
        match self {
            Kind::Delivered => MessageStatus::Delivered,
            Kind::Bounced { .. } => MessageStatus::Bounced,
            Kind::Complained => MessageStatus::Complained,
        }
    }
    pub fn event_type(&self) -> &'static str {
        match self {
            Kind::Delivered => "email.delivered",
            Kind::Bounced { .. } => "email.bounced",
            Kind::Complained => "email.complained",
        }
    }
    /// Hard bounces and complaints put the recipient on the suppression list.
    pub fn suppression_reason(&self) -> Option<&'static str> {
        match self {
            Kind::Bounced { hard: true } => Some("hard_bounce"),
            Kind::Complained => Some("complaint"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub kind: Kind,
    pub recipient: Option<String>,
    pub provider_message_id: Option<String>,
    /// Ours, when the provider echoes it (Postmark's Metadata).
    pub message_id: Option<String>,
    pub detail: Option<String>,
}

/// Postmark's Delivery, Bounce and SpamComplaint webhooks. `None`: a record type we ignore.
pub fn from_postmark(v: &Value) -> Option<Feedback> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let kind = match v.get("RecordType").and_then(Value::as_str)? {
        "Delivery" => Kind::Delivered,
        // Postmark's hard types: HardBounce, BadEmailAddress, ManuallyDeactivated, … (not soft/transient).
        "Bounce" => Kind::Bounced { hard: !matches!(s("Type").as_deref(), Some("SoftBounce" | "Transient" | "DnsError" | "AutoResponder" | "OpenRelayTest" | "Unknown" | "DMARCPolicy")) },
        "SpamComplaint" => Kind::Complained,
        _ => return None,
    };
    Some(Feedback {
        kind,
        recipient: s("Recipient").or_else(|| s("Email")),
        provider_message_id: s("MessageID"),
        message_id: v.get("Metadata").and_then(|m| m.get("multimail_message_id")).and_then(Value::as_str).map(str::to_string),
        detail: s("Description").or_else(|| s("Details")).or_else(|| s("Type")),
    })
}

/// Resend's email.delivered / email.bounced / email.complained webhooks.
pub fn from_resend(v: &Value) -> Option<Feedback> {
    let data = v.get("data")?;
    let kind = match v.get("type").and_then(Value::as_str)? {
        "email.delivered" => Kind::Delivered,
        "email.bounced" => {
            let t = data.get("bounce").and_then(|b| b.get("type")).and_then(Value::as_str).unwrap_or("Permanent");
            Kind::Bounced { hard: !t.eq_ignore_ascii_case("transient") && !t.eq_ignore_ascii_case("temporary") }
        }
        "email.complained" => Kind::Complained,
        _ => return None,
    };
    Some(Feedback {
        kind,
        recipient: data.get("to").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str).map(str::to_string),
        provider_message_id: data.get("email_id").and_then(Value::as_str).map(str::to_string),
        message_id: None,
        detail: data.get("bounce").and_then(|b| b.get("message")).and_then(Value::as_str).map(str::to_string),
    })
}

/// Postmark's own id of a webhook record, to recognise a replay: its `ID` (bounces,
/// complaints), else the message and the time of what happened (deliveries).
pub fn postmark_event_id(v: &Value) -> Option<String> {
    let ty = v.get("RecordType").and_then(Value::as_str).unwrap_or("");
    if let Some(id) = v.get("ID").filter(|i| !i.is_null()) {
        return Some(format!("{ty}:{}", id.to_string().trim_matches('"')));
    }
    let mid = v.get("MessageID").and_then(Value::as_str)?;
    let at = ["DeliveredAt", "BouncedAt", "ReceivedAt"].iter().find_map(|k| v.get(*k).and_then(Value::as_str)).unwrap_or("");
    Some(format!("{ty}:{mid}:{at}"))
}

pub const SVIX_TOLERANCE_SECS: i64 = 5 * 60;

/// Svix / Standard Webhooks verification: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the
/// base64 key after `whsec_`; any one `v1,` signature in the header may match; the timestamp
/// must be within five minutes.
pub fn verify_svix(secret: &str, id: &str, timestamp: &str, signatures: &str, body: &[u8], now_secs: i64) -> bool {
    let Ok(key) = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)) else { return false };
    let Ok(ts) = timestamp.parse::<i64>() else { return false };
    if (now_secs - ts).abs() > SVIX_TOLERANCE_SECS {
        return false;
    }
    if ts.to_string() != timestamp {
        return false; // the signed text is the header as sent; only its canonical form is accepted
    }
    // The same signature as the webhooks we send (Svix is Standard Webhooks).
    let expected = super::webhooks::signature(&key, id, ts, body);
    let expected = STANDARD.decode(expected.trim_start_matches("v1,")).expect("we encoded it");
    signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| STANDARD.decode(b).ok())
        .any(|sig| sig.len() == expected.len() && bool::from(subtle::ConstantTimeEq::ct_eq(sig.as_slice(), expected.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_postmark_records() {
        let b = from_postmark(&json!({"RecordType": "Bounce", "Type": "HardBounce", "MessageID": "pm-1", "Email": "x@example.com", "Description": "mailbox unknown", "Metadata": {"multimail_message_id": "msg_1"}})).unwrap();
        assert_eq!(b.kind, Kind::Bounced { hard: true });
        assert_eq!(b.message_id.as_deref(), Some("msg_1"));
        assert_eq!(b.kind.suppression_reason(), Some("hard_bounce"));
        let soft = from_postmark(&json!({"RecordType": "Bounce", "Type": "SoftBounce"})).unwrap();
        assert_eq!(soft.kind.suppression_reason(), None);
        assert_eq!(from_postmark(&json!({"RecordType": "SpamComplaint"})).unwrap().kind, Kind::Complained);
        assert!(from_postmark(&json!({"RecordType": "Open"})).is_none());
    }

    #[test]
    fn postmark_records_have_a_stable_id() {
        assert_eq!(postmark_event_id(&json!({"RecordType": "Bounce", "ID": 42})).as_deref(), Some("Bounce:42"));
        assert_eq!(
            postmark_event_id(&json!({"RecordType": "Delivery", "MessageID": "pm-1", "DeliveredAt": "2026-11-30T00:00:00Z"})).as_deref(),
            Some("Delivery:pm-1:2026-11-30T00:00:00Z")
        );
        assert_eq!(postmark_event_id(&json!({"RecordType": "Open"})), None);
    }

    #[test]
    fn reads_resend_events() {
        let d = from_resend(&json!({"type": "email.delivered", "data": {"email_id": "re_1", "to": ["a@example.com"]}})).unwrap();
        assert_eq!((d.kind, d.provider_message_id.as_deref(), d.recipient.as_deref()), (Kind::Delivered, Some("re_1"), Some("a@example.com")));
        assert!(from_resend(&json!({"type": "email.opened", "data": {}})).is_none());
    }

    #[test]
    fn svix_signatures_verify_and_reject_tampering_and_old_timestamps() {
        use hmac::{Hmac, Mac};
        use sha2::Sha256;
        let secret = format!("whsec_{}", STANDARD.encode(b"0123456789abcdef0123456789abcdef"));
        let body = br#"{"type":"email.delivered"}"#;
        let mut m = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        m.update(b"msg_1.1700000000.");
        m.update(body);
        let sig = format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()));
        assert!(verify_svix(&secret, "msg_1", "1700000000", &format!("v1,bogus {sig}"), body, 1_700_000_010));
        assert!(!verify_svix(&secret, "msg_1", "1700000000", &sig, b"{}", 1_700_000_010));
        assert!(!verify_svix(&secret, "msg_1", "1700000000", &sig, body, 1_700_001_000));
        assert!(!verify_svix("whsec_!!", "msg_1", "1700000000", &sig, body, 1_700_000_010));
    }
}
