//! What the caller's key may see and use: a mailbox of its account (and of its mailbox limit),
//! a message of its account and mode, a sending domain of its account.

use crate::app::Ctx;
use crate::domain::domains::DomainStatus;
use crate::domain::message::{Direction, MessageKind};
use crate::http::{ApiError, ApiResult};
use crate::store::{domains, mailboxes::{self, MailboxRow}, messages::{self, MessageWithMailbox}};

/// The account's mailbox named by `id` (or `mailbox`), visible to this key; 404 otherwise.
pub async fn visible_mailbox(ctx: &Ctx, id_or_address: &str) -> ApiResult<MailboxRow> {
    let p = ctx.principal();
    mailboxes::find(&ctx.db, &p.account_id, id_or_address)
        .await?
        .filter(|m| p.can_use_mailbox(&m.id))
        .ok_or_else(|| ApiError::new(404, "mailbox_not_found", format!("no mailbox `{id_or_address}` in this account")))
}

/// The caller's message (same account, same mode, a mailbox this key may use, not a sign-in
/// link); 404 otherwise.
pub async fn visible_message(ctx: &Ctx, id: &str) -> ApiResult<MessageWithMailbox> {
    let p = ctx.principal();
    messages::get_scoped(&ctx.db, &p.account_id, p.livemode, id)
        .await?
        .filter(|m| m.msg.kind != MessageKind::SignIn && p.can_use_mailbox(&m.msg.mailbox_id))
        .ok_or_else(|| ApiError::not_found("email").with_field("id"))
}

/// A message this key may read: visible, the user's mail (not an approval request), and not
/// inbound mail still held for approval.
pub async fn readable_message(ctx: &Ctx, id: &str) -> ApiResult<MessageWithMailbox> {
    let m = visible_message(ctx, id).await?;
    let held_inbound = m.msg.direction == Direction::Inbound && !m.msg.status.is_visible_inbound();
    if held_inbound || m.msg.kind != MessageKind::Message {
        return Err(ApiError::not_found("email").with_field("id"));
    }
    Ok(m)
}

/// Whether mail may be sent from (and mailboxes made on) `domain` by this account: its default
/// domain, or one of its custom domains that DNS has verified.
pub async fn is_sending_domain(ctx: &Ctx, domain: &str) -> ApiResult<bool> {
    let p = ctx.principal();
    if domain == p.default_domain {
        return Ok(true);
    }
    let row = domains::by_name(&ctx.db, &p.account_id, domain).await?;
    Ok(row.is_some_and(|d| d.status == DomainStatus::Verified))
}
