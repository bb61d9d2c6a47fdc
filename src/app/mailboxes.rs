//! Changing a mailbox (the API's `update_mailbox` and the console): its name and TTL at once;
//! its mode through `mode_changes` (stricter at once, a key's looser one waits for a human);
//! its oversight address at once for a human, through a change a human decides for a key; its
//! pre-send scan at once when stricter (or for a human), else through a change a human decides.

use crate::app::{changes, mode_changes, Ctx};
use crate::domain::changes::ChangeKind;
use crate::domain::oversight::OversightMode;
use crate::domain::disclosure::AiDisclosure;
use crate::domain::scan::ScanPolicy;
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
    /// A looser scan waiting for a human.
    pub scan_change: Option<ChangeRow>,
    /// Less AI disclosure waiting for a human.
    pub disclosure_change: Option<ChangeRow>,
    /// The allow-list bypass turned on, waiting for a human.
    pub bypass_change: Option<ChangeRow>,
}

/// Stores `mailbox` (its display name and TTL already set by the caller) with the mode and
/// oversight address asked for, in one batch with the idempotent answer `render` makes.
/// The settings an update may change besides the name and TTL (`None`: left as they are).
#[derive(Default)]
pub struct Settings<'a> {
    pub mode: Option<OversightMode>,
    pub oversight_email: Option<&'a str>,
    pub scan: Option<ScanPolicy>,
    pub ai_disclosure: Option<AiDisclosure>,
    pub allowlist_bypass: Option<bool>,
}

pub async fn update(ctx: &Ctx, mut mailbox: MailboxRow, settings: Settings<'_>, render: impl FnOnce(&Updated) -> Reply) -> ApiResult<Reply> {
    let Settings { mode, oversight_email, scan, ai_disclosure, allowlist_bypass } = settings;
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
    // The pre-send scan: stricter at once; looser waits for a human unless one asks.
    let mut scan_change = None;
    if let Some(s) = scan.filter(|s| *s != mailbox.scan) {
        if s.strictness() > mailbox.scan.strictness() || ctx.principal().actor().is_human() {
            batch.push(mailboxes::set_scan_stmt(&ctx.db, &mailbox.account_id, &mailbox.id, s, ctx.now)?);
            mailbox.scan = s;
        } else {
            let (c, statements) = changes::open(ctx, ChangeKind::ScanPolicy, Some(&mailbox.id), &mailbox.id, Some(s.as_str()))?;
            batch.extend(statements);
            scan_change = Some(c);
        }
    }
    // AI disclosure: more at once; less waits for a human unless one asks.
    let mut disclosure_change = None;
    if let Some(d) = ai_disclosure.filter(|d| *d != mailbox.ai_disclosure) {
        if d.strictness() > mailbox.ai_disclosure.strictness() || ctx.principal().actor().is_human() {
            batch.push(mailboxes::set_ai_disclosure_stmt(&ctx.db, &mailbox.account_id, &mailbox.id, d, ctx.now)?);
            mailbox.ai_disclosure = d;
        } else {
            let (c, statements) = changes::open(ctx, ChangeKind::AiDisclosure, Some(&mailbox.id), &mailbox.id, Some(d.as_str()))?;
            batch.extend(statements);
            disclosure_change = Some(c);
        }
    }
    // The allow-list bypass: off at once; on (sending unheld) waits for a human unless one asks.
    let mut bypass_change = None;
    if let Some(on) = allowlist_bypass.filter(|on| *on != (mailbox.allowlist_bypass == 1)) {
        if !on || ctx.principal().actor().is_human() {
            batch.push(mailboxes::set_allowlist_bypass_stmt(&ctx.db, &mailbox.account_id, &mailbox.id, on, ctx.now)?);
            mailbox.allowlist_bypass = i64::from(on);
        } else {
            let (c, statements) = changes::open(ctx, ChangeKind::AllowlistBypass, Some(&mailbox.id), &mailbox.id, Some("true"))?;
            batch.extend(statements);
            bypass_change = Some(c);
        }
    }
    let mut shown = mailbox.clone();
    if let Some(to) = plan.apply_now {
        shown.oversight_mode = to;
    }
    let updated = Updated { shown, pending: plan.pending, email_change, scan_change, disclosure_change, bypass_change };
    let reply = render(&updated);
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        batch.push(s);
    }
    ctx.db.batch(batch).await?;
    for c in updated.email_change.iter().chain(&updated.scan_change).chain(&updated.disclosure_change).chain(&updated.bypass_change) {
        changes::opened(ctx, c).await;
    }
    // Stricter (or a human's looser) applies at once, and says so.
    if let Some(to) = plan.apply_now {
        mode_changes::apply_mode(ctx, &mailbox.id, to, &ctx.principal().actor_name()).await?;
    }
    Ok(reply)
}
