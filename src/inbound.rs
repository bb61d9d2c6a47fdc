//! One path for inbound mail, whichever way it came in (Email Routing's `email` handler,
//! Postmark's inbound webhook, a raw MIME POST): route by recipient to the mailboxes, store once
//! per mailbox (a repeated Message-ID is a duplicate), join a thread, and either make it visible
//! (`email.received`) or, in a `gated_all` mailbox, hold it for a human.

use serde_json::{json, Value};
use worker::{D1Database, Env};

use crate::domain::inbound::{routing_candidates, ParsedEmail, MAX_STORED_RAW};
use crate::domain::oversight::OversightMode;
use crate::domain::ids;
use crate::platform;
use crate::store::{self, events, mailboxes::MailboxRow, messages::{self, MessageRow}};

#[derive(Debug, Default)]
pub struct Ingested {
    /// `(mailbox address, message id, status)` for each mailbox it was stored in.
    pub stored: Vec<(String, String, String)>,
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

async fn mailboxes_for(db: &D1Database, candidates: &[String], account_id: Option<&str>) -> worker::Result<Vec<MailboxRow>> {
    let list = serde_json::to_string(candidates).expect("strings serialize");
    store::all(
        db,
        "SELECT * FROM mailboxes WHERE deleted_at IS NULL AND address IN (SELECT value FROM json_each(?1))
           AND (?2 IS NULL OR account_id = ?2) ORDER BY id",
        crate::args![&list, account_id],
    )
    .await
}

/// `None` when no recipient is one of our mailboxes (the caller rejects the mail).
pub async fn ingest(env: &Env, parsed: &ParsedEmail, raw: Option<&[u8]>, envelope_to: &[String], livemode: bool, account_id: Option<&str>) -> worker::Result<Option<Ingested>> {
    let db = store::db(env)?;
    let recipients: Vec<String> = if envelope_to.is_empty() { parsed.to.iter().chain(&parsed.cc).cloned().collect() } else { envelope_to.to_vec() };
    let candidates = routing_candidates(&recipients);
    let boxes = mailboxes_for(&db, &candidates, account_id).await?;
    if boxes.is_empty() {
        return Ok(None);
    }
    let now = platform::now_ms();
    let snippet = parsed.snippet();
    let parsed_json = serde_json::to_string(parsed).map_err(|e| e.to_string())?;
    let raw_text = raw.filter(|r| r.len() <= MAX_STORED_RAW).and_then(|r| std::str::from_utf8(r).ok());
    let mut out = Ingested::default();
    for mb in boxes {
        let mode = OversightMode::parse(&mb.oversight_mode).unwrap_or(OversightMode::GatedAll);
        let held = mode == OversightMode::GatedAll;
        let thread_id = match messages::thread_of_any(&db, &mb.account_id, livemode, &parsed.referenced_ids()).await? {
            Some(t) => t,
            None => platform::new_id(ids::THREAD),
        };
        let id = platform::new_id(ids::MESSAGE);
        let status = if held { "pending_approval" } else { "received" };
        let row = MessageRow {
            id: id.clone(),
            account_id: mb.account_id.clone(),
            livemode: livemode as i64,
            mailbox_id: mb.id.clone(),
            direction: "inbound".into(),
            thread_id: thread_id.clone(),
            from_addr: parsed.from.clone().unwrap_or_default(),
            to_json: serde_json::to_string(&parsed.to).expect("strings serialize"),
            cc_json: serde_json::to_string(&parsed.cc).expect("strings serialize"),
            bcc_json: "[]".into(),
            subject: parsed.subject.clone(),
            oversight_mode: mode.as_str().into(),
            status: status.into(),
            metadata: "{}".into(),
            send_at: None,
            provider: None,
            provider_message_id: None,
            attempts: 0,
            last_error: None,
            claimed_at: None,
            idempotency_key: None,
            created_at: now,
            updated_at: now,
            sent_at: None,
            expires_at: held.then(|| now + 1000 * mb.approval_ttl_secs),
            decision: None,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            kind: "message".into(),
            message_id_header: parsed.message_id.clone(),
            read: 0,
            tags: "[]".into(),
            snippet: Some(snippet.clone()),
            category: None,
        };
        let mut batch = vec![
            messages::insert(&db, &row)?,
            messages::insert_blob(&db, &id, "parsed", &parsed_json)?,
            messages::timeline(&db, &id, now, "received", Some(&format!("for {}", mb.address)))?,
        ];
        if let Some(r) = raw_text {
            batch.push(messages::insert_blob(&db, &id, "mime", r)?);
        }
        let payload = if held {
            crate::routes::send::pending_payload(&row, &mb.address, &parsed.to, now)
        } else {
            received_payload(&row, &mb.address, now)
        };
        batch.push(events::about_message(&db, &row, &payload)?);
        match db.batch(batch).await {
            Ok(_) => {}
            Err(e) if store::is_unique_violation(&e) => {
                out.duplicates.push(mb.address.clone());
                continue;
            }
            Err(e) => return Err(e),
        }
        crate::events::kick(env).await;
        if held {
            let req = crate::oversight::DoRequest { hold: crate::oversight::hold_of(&row), command: None, audit_here: false };
            if let Err(e) = crate::oversight::call(env, &req).await {
                worker::console_error!("holding inbound {id} failed (the sweep expires it on time): {e}");
            }
        }
        crate::audit::record(env, crate::audit::Facts {
            account_id: row.account_id.clone(),
            livemode,
            actor: "system:inbound".into(),
            action: "email.received".into(),
            mailbox: Some(mb.id.clone()),
            message_id: Some(id.clone()),
            oversight_mode: Some(mode.as_str().into()),
            outcome: status.into(),
            detail: parsed.from_address.clone().map(|f| format!("from {f}")),
            ..Default::default()
        })
        .await;
        out.stored.push((mb.address.clone(), id, status.into()));
    }
    Ok(Some(out))
}

/// The flat `email.received` payload (`id` is the email's id).
pub fn received_payload(row: &MessageRow, mailbox_address: &str, now: i64) -> Value {
    let event_id = ids::derived_id(ids::EVENT, &format!("{}:received", row.id));
    events::message_payload(row, mailbox_address, "email.received", event_id, now, json!({
        "id": row.id,
        "thread_id": row.thread_id,
        "from": row.from_addr,
        "to": serde_json::from_str::<Value>(&row.to_json).unwrap_or_else(|_| json!([])),
        "subject": row.subject,
        "snippet": row.snippet,
    }))
}
