//! Changing a mailbox (the API's `update_mailbox` and the console): its name and TTL at once;
//! its mode through `mode_changes` (stricter at once, a key's looser one waits for a human);
//! its oversight address at once for a human, through a change a human decides for a key.

use crate::app::{changes, mode_changes, Ctx};
use crate::domain::changes::ChangeKind;
use crate::domain::oversight::OversightMode;
use crate::http::{ApiResult, Reply};
use crate::store::changes::ChangeRow;
use crate::store::mailboxes::{self, MailboxRow};
use crate::store::mode_changes::ModeChangeRow;

/// What an update did, to answer with.
pub struct Updated {
    /// The mailbox as it now is (a tightened mode included).
    pub shown: MailboxRow,
    /// A mode change waiting for a human.
    pub pending: Option<ModeChangeRow>,
    /// An oversight-address change waiting for a human.
    pub email_change: Option<ChangeRow>,
}

/// Stores `mailbox` (its display name and TTL already set by the caller) with the mode and
/// oversight address asked for, in one batch with the idempotent answer `render` makes.
pub async fn update(ctx: &Ctx, mut mailbox: MailboxRow, mode: Option<OversightMode>, oversight_email: Option<&str>, render: impl FnOnce(&Updated) -> Reply) -> ApiResult<Reply> {
    let plan = mode_changes::plan(ctx, &mailbox, mode).await?;
    mailbox.updated_at = ctx.now;
    let mut batch = vec![mailboxes::update(&ctx.db, &mailbox)?];
    batch.extend(plan.statements);
    // Where approval requests go is oversight: a key's new address waits for a human.
    let mut email_change = None;
    if let Some(e) = oversight_email.filter(|e| mailbox.oversight_email.as_deref() != Some(*e)) {
        if ctx.principal().actor().is_human() {
            batch.push(mailboxes::set_oversight_email_stmt(&ctx.db, &mailbox.account_id, &mailbox.id, Some(e), ctx.now)?);
            mailbox.oversight_email = Some(e.to_string());
        } else {
            let (c, statements) = changes::open(ctx, ChangeKind::OversightEmail, Some(&mailbox.id), &mailbox.id, Some(e))?;
            batch.extend(statements);
            email_change = Some(c);
        }
    }
    let mut shown = mailbox.clone();
    if let Some(to) = plan.apply_now {
        shown.oversight_mode = to;
    }
    let updated = Updated { shown, pending: plan.pending, email_change };
    let reply = render(&updated);
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        batch.push(s);
    }
    ctx.db.batch(batch).await?;
    if let Some(c) = &updated.email_change {
        changes::opened(ctx, c).await;
    }
    // Stricter (or a human's looser) applies at once, and says so.
    if let Some(to) = plan.apply_now {
        mode_changes::apply_mode(ctx, &mailbox.id, to, &ctx.principal().actor_name()).await?;
    }
    Ok(reply)
}
