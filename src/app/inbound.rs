//! One path for inbound mail, whichever way it came in (Email Routing's `email` handler,
//! Postmark's inbound webhook, a raw MIME POST): route by recipient to the mailboxes, store once
//! per mailbox (a repeated Message-ID is a duplicate), join a thread, and either make it visible
//! (`email.received`) or, in a `gated_all` mailbox, hold it for a human. Mail from a sender a
//! receive rule blocks is quarantined: held for a human whatever the mode (`domain::rules`).

use serde_json::{json, Value};
use worker::Env;

use crate::app::{attachments, audit, oversight, payloads, queues};
use crate::domain::attachments::r2_key;
use crate::domain::ids;
use crate::domain::inbound::{routing_candidates, ParsedEmail, MAX_STORED_RAW};
use crate::domain::message::{Direction, MessageKind, MessageStatus};
use crate::domain::oversight::OversightMode;
use crate::domain::rules;
use crate::platform;
use crate::store::rules as rule_store;
use crate::store::{self, events, mailboxes, messages::{self, Blob, MessageRow, NewMessage}};

/// The hold reason of inbound mail a receive rule quarantined.
pub const QUARANTINE: &str = "rule:blocked_sender";

#[derive(Debug, Default)]
pub struct Ingested {
    /// `(mailbox address, message id, status)` for each mailbox it was stored in.
    pub stored: Vec<(String, String, MessageStatus)>,
    /// Mailboxes that already had this Message-ID.
    pub duplicates: Vec<String>,
}

impl Ingested {
    pub fn to_json(&self) -> Value {
        json!({
            "stored": self.stored.iter().map(|(mb, id, st)| json!({"mailbox": mb, "id": id, "status": st})).collect::<Vec<_>>(),
            "duplicates": self.duplicates,
        })
    }
}

/// `None` when no recipient is one of our mailboxes (the caller rejects the mail). `account_id`
/// and `allowed` narrow the mailboxes it may reach (a raw MIME POST with a key: that key's
/// account, and its mailbox limit).
pub async fn ingest(env: &Env, parsed: &ParsedEmail, raw: Option<&[u8]>, envelope_to: &[String], livemode: bool, account_id: Option<&str>, allowed: Option<&[String]>) -> worker::Result<Option<Ingested>> {
    let db = store::db(env)?;
    let recipients: Vec<String> = if envelope_to.is_empty() { parsed.to.iter().chain(&parsed.cc).cloned().collect() } else { envelope_to.to_vec() };
    let candidates = routing_candidates(&recipients);
    let mut boxes = mailboxes::at_addresses(&db, &candidates, account_id).await?;
    if let Some(allowed) = allowed {
        boxes.retain(|b| allowed.contains(&b.id));
    }
    if boxes.is_empty() {
        return Ok(None);
    }
    let now = platform::now_ms();
    let snippet = parsed.snippet();
    // With the attachments bucket, every attachment is kept whole there (`stored`), whatever
    // its size; D1 keeps its metadata (and small ones inline, as before).
    let bucket = if parsed.parts.is_empty() { None } else { attachments::bucket(env) };
    let mut record = serde_json::to_value(parsed).map_err(|e| e.to_string())?;
    if bucket.is_some() {
        if let Some(list) = record.get_mut("attachments").and_then(Value::as_array_mut) {
            for a in list.iter_mut().take(parsed.parts.len()) {
                a["stored"] = json!(true);
            }
        }
    }
    let parsed_json = record.to_string();
    let raw_text = raw.filter(|r| r.len() <= MAX_STORED_RAW).and_then(|r| std::str::from_utf8(r).ok());
    let mut out = Ingested::default();
    for mb in boxes {
        let mode = mb.oversight_mode;
        // Receive rules: a blocked sender's mail is quarantined (held for a human whatever the
        // mode); an allowed sender's passes a `gated_all` mailbox that opted in.
        let receive_rules = rule_store::for_receive(&db, &mb.account_id, &mb.id).await?;
        let sender = parsed.from_address.as_deref().map(str::to_ascii_lowercase);
        let verdict = rules::judge_inbound(&receive_rules, sender.as_deref(), mb.allowlist_bypass == 1);
        let quarantined = verdict == rules::Inbound::Quarantine;
        let held = quarantined || (mode == OversightMode::GatedAll && verdict != rules::Inbound::Unheld);
        let thread_id = match messages::thread_of_any(&db, &mb.account_id, livemode, &parsed.referenced_ids()).await? {
            Some(t) => t,
            None => platform::new_id(ids::THREAD),
        };
        let id = platform::new_id(ids::MESSAGE);
        let status = if held { MessageStatus::PendingApproval } else { MessageStatus::Received };
        let mut row = MessageRow::new(NewMessage {
            id: id.clone(),
            account_id: mb.account_id.clone(),
            livemode,
            mailbox_id: mb.id.clone(),
            direction: Direction::Inbound,
            kind: MessageKind::Message,
            thread_id: thread_id.clone(),
            from_addr: parsed.from.clone().unwrap_or_default(),
            subject: parsed.subject.clone(),
            oversight_mode: mode,
            status,
            now,
        });
        row.to_json = serde_json::to_string(&parsed.to).expect("strings serialize");
        row.cc_json = serde_json::to_string(&parsed.cc).expect("strings serialize");
        row.expires_at = held.then(|| now + 1000 * mb.approval_ttl_secs);
        row.message_id_header = parsed.message_id.clone();
        row.snippet = Some(snippet.clone());
        let mut batch = vec![
            messages::insert(&db, &row)?,
            messages::insert_blob(&db, &id, Blob::Parsed, &parsed_json)?,
            messages::timeline(&db, &id, now, "received", Some(&format!("for {}", mb.address)))?,
        ];
        if let Some(r) = raw_text {
            batch.push(messages::insert_blob(&db, &id, Blob::Mime, r)?);
        }
        if bucket.is_some() {
            let items: Vec<(usize, String, usize)> = parsed.parts.iter().enumerate().map(|(i, b)| (i, r2_key(&id, i), b.len())).collect();
            batch.push(store::attachments::insert_for(&db, &id, &items, now)?);
        }
        if quarantined {
            let who = sender.as_deref().unwrap_or("an unknown sender");
            batch.push(messages::timeline(&db, &id, now, "quarantined", Some(&format!("a receive rule blocks {who}: held for a human ({QUARANTINE})")))?);
        } else if held != (mode == OversightMode::GatedAll) {
            batch.push(messages::timeline(&db, &id, now, "allowlisted", Some("the sender is on the allow list: received without a hold (allowlist_bypass)"))?);
        }
        let mut payload = if held { payloads::pending(&row, &mb.address, &parsed.to, now) } else { payloads::received(&row, &mb.address, now) };
        if quarantined {
            payload["hold_reason"] = json!(QUARANTINE);
        }
        batch.push(events::about_message(&db, &row, &payload)?);
        match db.batch(batch).await {
            Ok(_) => {}
            Err(e) if store::is_unique_violation(&e) => {
                out.duplicates.push(mb.address.clone());
                continue;
            }
            Err(e) => return Err(e),
        }
        if let Some(b) = &bucket {
            attachments::put_inbound(b, &id, parsed).await;
        }
        queues::kick_events(env).await;
        if held {
            if let Err(e) = oversight::hold(env, &row).await {
                worker::console_error!("holding inbound {id} failed (the sweep expires it on time): {e}");
            }
        }
        let from = parsed.from_address.clone().map(|f| format!("from {f}"));
        audit::record(env, audit::about_message(&row, "system:inbound", "email.received", status.as_str(), from)).await;
        out.stored.push((mb.address.clone(), id, status));
    }
    Ok(Some(out))
}
