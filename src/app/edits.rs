//! Approve with edits, around the pure `domain::edits`. Before the decision, `prepare` checks
//! the reviewer's version against the held message, builds its MIME once and stages both
//! forms in D1 under the version's hash; the `Approval` object then stores the `Edit` with the
//! decision, and `statements` (run by `oversight::apply_decision_effects` before the decision
//! is mirrored, while the message is still held) swaps the staged version in. A reviewer whose
//! decision loses leaves only a staged copy, removed with the winner's.

use serde_json::{json, Value};

use crate::app::Ctx;
use crate::domain::authority::{Actor, Role};
use crate::domain::delivery::OutboundEmail;
use crate::domain::disclosure::AiDisclosure;
use crate::domain::edits::{self, Edit, EditsInput};
use crate::domain::message::Direction;
use crate::domain::mime;
use crate::http::{ApiError, ApiResult, Reply};
use crate::store::messages::{self, Blob, MessageWithMailbox};
use crate::domain::rules;
use crate::store::rules as rule_store;
use crate::store::{mailboxes, AccountOf, Db};

/// Whether this reviewer may add recipients: an `owner` signed in to the console (an
/// `oversight` key and an `approver` may only remove them).
pub fn may_add_recipients(actor: Actor<'_>) -> bool {
    matches!(actor, Actor::Operator { role: Role::Owner } | Actor::Deployment)
}

/// Checks `edits` (the request's JSON) against a held outbound message and stages the version
/// to send. `None`: the edits change nothing (a plain approval).
pub async fn prepare(ctx: &Ctx, m: &MessageWithMailbox, edits_json: &Value) -> ApiResult<Option<Edit>> {
    let p = ctx.principal();
    if m.msg.direction != Direction::Outbound {
        return Err(ApiError::unprocessable("not_editable", "only outbound messages can be approved with edits").with_field("edits"));
    }
    let input: EditsInput = serde_json::from_value(edits_json.clone())
        .map_err(|e| ApiError::invalid_field("edits", format!("`edits` is an object of subject, text, html, markdown, to, cc: {e}")))?;
    let original: OutboundEmail = messages::blob(&ctx.db, &m.msg.id, Blob::Outbound)
        .await?
        .and_then(|j| serde_json::from_str(&j).ok())
        .ok_or_else(ApiError::internal)?;
    let footer = mailboxes::find(&ctx.db, &p.account_id, &m.msg.mailbox_id).await?.is_some_and(|b| b.ai_disclosure == AiDisclosure::Footer);
    let Some(edit) = edits::apply(&original, &input, may_add_recipients(p.actor()), footer)? else { return Ok(None) };
    // An owner's added recipients pass the suppression list and the block rules like a send's.
    let added = edits::added(&original, &edit);
    if !added.is_empty() {
        let address = m.mailbox_address.to_ascii_lowercase();
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        let results = ctx.db.batch(mailboxes::sender_statements(&ctx.db, AccountOf::Id(&p.account_id), &address, &domain, &added)?.into()).await?;
        let suppressed = mailboxes::sender_of(&results[0])?.map(|s| s.suppressed).unwrap_or_default();
        if !suppressed.is_empty() {
            return Err(ApiError::recipient_suppressed("an added recipient is", &suppressed, "edits.to"));
        }
        let verdict = rules::judge(&rule_store::of(&results[2])?, &added);
        if !verdict.blocked.is_empty() {
            return Err(ApiError::recipient_blocked(&verdict.blocked, "edits.to"));
        }
    }
    let sent = edits::applied(&original, &edit);
    // A large message's MIME is built when it is delivered (its attachments are in the bucket).
    let mime_text = if sent.has_stored() { String::new() } else { String::from_utf8(mime::build(&edits::to_send(&sent)?, &m.msg.id, ctx.now)?).map_err(|_| ApiError::internal())? };
    let outbound_json = serde_json::to_string(&sent).map_err(|_| ApiError::internal())?;
    ctx.db.batch(messages::stage_edit(&ctx.db, &m.msg.id, &edit.sent_sha256, &outbound_json, &mime_text)?).await?;
    Ok(Some(edit))
}

/// What `get_email` and the console show of an edited message: who, which fields, the hashes.
pub fn record_json(edit: &Edit, by: &str) -> Value {
    json!({"edited_by": by, "fields": edit.fields, "original_sha256": edit.original_sha256, "sent_sha256": edit.sent_sha256})
}

/// The statements that put the winning version on the message (see `store::messages::store_edit`).
pub fn statements(db: &Db, message_id: &str, edit: &Edit, by: &str) -> worker::Result<Vec<worker::D1PreparedStatement>> {
    let list = |v: &[String]| serde_json::to_string(v).expect("strings serialize");
    let snippet: String = edit.text.as_deref().or(edit.html.as_deref()).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
    messages::store_edit(db, message_id, &edit.sent_sha256, &edit.subject, &list(&edit.to), &list(&edit.cc), &snippet, by, &record_json(edit, by).to_string())
}

/// Records the decision's audit entry with what the reviewer changed: the fields and both
/// versions' SHA-256 (instead of the router's entry without them).
pub async fn audit(ctx: &Ctx, reply: &Reply, edit: &Edit) -> ApiResult<()> {
    let detail = format!("edited {}; original sha256 {}; sent sha256 {}", edit.fields.join(", "), edit.original_sha256, edit.sent_sha256);
    if let Some(s) = ctx.audit_entry_with_detail(reply, detail)? {
        ctx.db.exec(s).await?;
        ctx.audited();
    }
    Ok(())
}
