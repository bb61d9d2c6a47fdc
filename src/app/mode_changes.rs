//! Mode changes: a stricter mode applies at once; a looser one asked for by a key opens a change
//! that waits for a human (`decide_email` with its `chg_…` id, or the console), decided by
//! compare-and-set on its row; a human's applies at once. The rules are
//! `domain::oversight::request_mode` (same / tighter / looser / supersede) and
//! `domain::authority` (who decides). A mailbox serves both modes, so every mode change is
//! recorded in the account's live audit chain.

use serde_json::json;
use worker::D1PreparedStatement;

use crate::app::{audit, payloads, queues, Ctx};
use crate::domain::authority::{self, Weakening};
use crate::domain::ids;
use crate::domain::oversight::{request_mode, ChangeStatus, ModeRequest, OversightMode};
use crate::domain::time::to_rfc3339;
use crate::http::{ApiError, ApiResult};
use crate::platform;
use crate::store::{events, mailboxes::{self, MailboxRow}, mode_changes::{self, ModeChangeRow}};

pub const MODE_CHANGE_PREFIX: &str = "chg";

/// Whether `id` names a mode change (rather than a message).
pub fn is_mode_change_id(id: &str) -> bool {
    id.starts_with(&format!("{MODE_CHANGE_PREFIX}_"))
}

/// A new waiting change of `mailbox` to `to`, requested by the caller.
pub fn new_change(ctx: &Ctx, mailbox: &MailboxRow, to: OversightMode) -> ModeChangeRow {
    let p = ctx.principal();
    ModeChangeRow {
        id: platform::new_id(MODE_CHANGE_PREFIX),
        account_id: p.account_id.clone(),
        mailbox_id: mailbox.id.clone(),
        from_mode: mailbox.oversight_mode,
        to_mode: to,
        status: ChangeStatus::Pending,
        requested_by: p.key_id.clone(),
        created_at: ctx.now,
        decided_at: None,
        decided_by: None,
    }
}

/// What asking an existing mailbox for a mode does: the statements to add to the caller's
/// write batch, the change that now waits (to show), and the mode to apply at once after the
/// batch (`apply_mode`): a tightening, or a human's loosening.
pub struct ModePlan {
    pub statements: Vec<D1PreparedStatement>,
    pub pending: Option<ModeChangeRow>,
    pub apply_now: Option<OversightMode>,
}

pub async fn plan(ctx: &Ctx, mailbox: &MailboxRow, requested: Option<OversightMode>) -> ApiResult<ModePlan> {
    let rule = requested.map(|to| request_mode(mailbox.oversight_mode, to));
    Ok(match rule {
        Some(ModeRequest::Loosen { to, .. }) if authority::weakening(ctx.principal().actor())? == Weakening::WaitForHuman => {
            // A newer request replaces one still waiting.
            let change = new_change(ctx, mailbox, to);
            let statements = vec![mode_changes::supersede_pending(&ctx.db, &mailbox.id, ctx.now)?, mode_changes::insert(&ctx.db, &change)?];
            record(ctx, &mailbox.id, "mode_change.requested", format!("{}: {} → {}", change.id, mailbox.oversight_mode, to)).await;
            ModePlan { statements, pending: Some(change), apply_now: None }
        }
        Some(ModeRequest::Loosen { to, .. } | ModeRequest::Tighten { to, .. }) => {
            // A stricter mode (or a human's looser one) applies at once and retires any change
            // still waiting.
            let statements = vec![mode_changes::supersede_pending(&ctx.db, &mailbox.id, ctx.now)?];
            ModePlan { statements, pending: None, apply_now: Some(to) }
        }
        Some(ModeRequest::Same) | None => {
            ModePlan { statements: vec![], pending: mode_changes::pending_for(&ctx.db, &mailbox.id).await?, apply_now: None }
        }
    })
}

/// Sets a mailbox's mode and emits `mailbox.mode_changed` (from whatever mode it has now).
pub async fn apply_mode(ctx: &Ctx, mailbox_id: &str, new: OversightMode, approved_by: &str) -> ApiResult<()> {
    let p = ctx.principal();
    let Some(mb) = mailboxes::find(&ctx.db, &p.account_id, mailbox_id).await? else { return Ok(()) };
    let event_id = platform::new_id(ids::EVENT);
    let payload = payloads::mode_changed(&event_id, &mb.address, p.livemode, mb.oversight_mode, new, approved_by, ctx.now);
    ctx.db
        .batch(vec![
            mailboxes::set_mode(&ctx.db, mailbox_id, new, ctx.now)?,
            events::insert(&ctx.db, &events::NewEvent {
                id: &event_id,
                account_id: &p.account_id,
                livemode: p.livemode,
                mailbox_id: Some(mailbox_id),
                message_id: None,
                payload: &payload,
                created_at: ctx.now,
            })?,
        ])
        .await?;
    queues::kick_events(&ctx.env).await;
    record(ctx, mailbox_id, "mailbox.mode_changed", format!("{} → {new} (approved by {approved_by})", mb.oversight_mode)).await;
    Ok(())
}

/// Mode changes go into the live chain, whichever mode's credential asked or decided.
async fn record(ctx: &Ctx, mailbox_id: &str, action: &str, detail: String) {
    audit::record_live(ctx, action, Some(mailbox_id.to_string()), detail).await;
}

/// A human decides a waiting change: one winner by compare-and-set; an approval applies the
/// mode. The decided change, or 404 (not this key's) or 409 with the winner.
pub async fn decide(ctx: &Ctx, id: &str, approve: bool, by: &str) -> ApiResult<ModeChangeRow> {
    let p = ctx.principal();
    // A mailbox's mode governs its live mail too: only a live human credential decides.
    authority::may_decide_change(p.actor())?;
    let status = if approve { ChangeStatus::Approved } else { ChangeStatus::Rejected };
    // Visibility first: a key limited to some mailboxes sees no other mailbox's changes.
    let existing = mode_changes::get(&ctx.db, &p.account_id, id).await?;
    if !existing.as_ref().is_some_and(|c| p.can_use_mailbox(&c.mailbox_id)) {
        return Err(ApiError::not_found("mode change").with_field("id"));
    }
    let Some(change) = mode_changes::decide(&ctx.db, &p.account_id, id, status, ctx.now, by).await? else {
        let c = mode_changes::get(&ctx.db, &p.account_id, id).await?.ok_or_else(|| ApiError::not_found("mode change").with_field("id"))?;
        return Err(ApiError::conflict("already_decided", format!("{id} was already decided: {}", c.status))
            .with_extra(json!({"winner": {"id": c.id, "decision": c.status, "decided_by": c.decided_by, "decided_at": c.decided_at.map(to_rfc3339)}})));
    };
    if approve {
        apply_mode(ctx, &change.mailbox_id, change.to_mode, by).await?;
    }
    Ok(change)
}
