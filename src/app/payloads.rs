//! What each event says: the flat payloads the outbox stores (`store::events`) and the fan-out
//! delivers to webhooks and Inngest. One builder per event type, so the contract's fields are
//! written once.

use serde_json::{json, Value};

use crate::domain::approval::Approval;
use crate::domain::ids;
use crate::domain::oversight::OversightMode;
use crate::domain::time::to_rfc3339;
use crate::platform;
use crate::store::messages::MessageRow;

/// The flat payload of an event about one message: the contract's common fields (`type`,
/// `event_id`, `created_at`, `mailbox`, `livemode`, the message's `metadata`, `message_id`)
/// and the type's own fields in `extra`.
pub fn message_payload(m: &MessageRow, mailbox_address: &str, ty: &str, event_id: String, now: i64, extra: Value) -> Value {
    let mut v = json!({
        "type": ty,
        "event_id": event_id,
        "created_at": to_rfc3339(now),
        "mailbox": mailbox_address,
        "livemode": m.is_live(),
        "metadata": serde_json::from_str::<Value>(&m.metadata).unwrap_or_else(|_| json!({})),
        "message_id": m.id,
    });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
    }
    v
}

/// `email.pending`: a message (either direction) waits for a human.
pub fn pending(row: &MessageRow, mailbox_address: &str, to: &[String], now: i64) -> Value {
    message_payload(row, mailbox_address, "email.pending", platform::new_id(ids::EVENT), now, json!({
        "direction": row.direction,
        "from": row.from_addr,
        "to": to,
        "subject": row.subject,
        "expires_at": row.expires_at.map(to_rfc3339),
    }))
}

/// `email.received` (`id` is the email's id). Its event id is derived from the message, so a
/// repeat announces nothing twice.
pub fn received(row: &MessageRow, mailbox_address: &str, now: i64) -> Value {
    let event_id = ids::derived_id(ids::EVENT, &format!("{}:received", row.id));
    message_payload(row, mailbox_address, "email.received", event_id, now, json!({
        "id": row.id,
        "thread_id": row.thread_id,
        "from": row.from_addr,
        "to": serde_json::from_str::<Value>(&row.to_json).unwrap_or_else(|_| json!([])),
        "subject": row.subject,
        "snippet": row.snippet,
    }))
}

/// `email.decided`: a human (or the expiry) decided a held message; one per message.
pub fn decided(row: &MessageRow, mailbox_address: &str, a: &Approval, now: i64) -> Value {
    let event_id = ids::derived_id(ids::EVENT, &format!("{}:decided", row.id));
    message_payload(row, mailbox_address, "email.decided", event_id, now, json!({
        "direction": row.direction,
        "decision": a.status.as_str(),
        "decided_by": a.decided_by,
        "reason": a.reason,
        "edited": a.edit.is_some(),
        "edited_fields": a.edit.as_deref().map(|e| e.fields.clone()).unwrap_or_default(),
    }))
}

/// `email.sent`: the provider accepted it.
pub fn sent(row: &MessageRow, mailbox_address: &str, provider: &str, provider_message_id: &str, now: i64) -> Value {
    message_payload(row, mailbox_address, "email.sent", platform::new_id(ids::EVENT), now, json!({
        "provider": provider,
        "provider_message_id": provider_message_id,
        "oversight_mode": row.oversight_mode,
    }))
}

/// `email.failed`: delivery gave up.
pub fn failed(row: &MessageRow, mailbox_address: &str, reason: &str, now: i64) -> Value {
    message_payload(row, mailbox_address, "email.failed", platform::new_id(ids::EVENT), now, json!({"reason": reason}))
}

/// `email.delivered` | `email.bounced` | `email.complained`: what the provider reported later.
pub fn feedback(row: &MessageRow, mailbox_address: &str, event_type: &str, provider: &str, recipient: Option<&str>, details: Option<&str>, now: i64) -> Value {
    message_payload(row, mailbox_address, event_type, platform::new_id(ids::EVENT), now, json!({
        "provider": provider,
        "recipient": recipient,
        "details": details,
    }))
}

/// `mailbox.mode_changed`.
pub fn mode_changed(event_id: &str, mailbox_address: &str, livemode: bool, old: OversightMode, new: OversightMode, approved_by: &str, now: i64) -> Value {
    json!({
        "type": "mailbox.mode_changed",
        "event_id": event_id,
        "created_at": to_rfc3339(now),
        "mailbox": mailbox_address,
        "livemode": livemode,
        "metadata": {},
        "old_mode": old,
        "new_mode": new,
        "approved_by": approved_by,
    })
}

/// `sending.paused` | `sending.resumed`: the kill switch was pulled or released, for a mailbox
/// (`mailbox`, `mailbox_id`) or the whole account (both null). `released`: messages a resume let go.
#[allow(clippy::too_many_arguments)]
pub fn sending(ty: &str, event_id: &str, livemode: bool, mailbox: Option<(&str, &str)>, by: &str, reason: Option<&str>, released: Option<usize>, now: i64) -> Value {
    json!({
        "type": ty,
        "event_id": event_id,
        "created_at": to_rfc3339(now),
        "mailbox": mailbox.map(|m| m.1),
        "mailbox_id": mailbox.map(|m| m.0),
        "livemode": livemode,
        "metadata": {},
        "scope": if mailbox.is_some() { "mailbox" } else { "account" },
        "by": by,
        "reason": reason,
        "released": released,
    })
}
