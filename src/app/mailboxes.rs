//! Changing a mailbox (the API's `update_mailbox` and the console): its name and TTL at once;
//! its mode through `mode_changes` (stricter at once, a key's looser one waits for a human);
//! its oversight address at once for a human, through a change a human decides for a key; its
//! pre-send scan at once when stricter (or for a human), else through a change a human decides.

use worker::D1PreparedStatement;

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
    // Each setting below: applied at once when it tightens oversight or a human asks; a key's
    // loosening opens a change a human decides.
    let (mb, acct, now) = (mailbox.id.clone(), mailbox.account_id.clone(), ctx.now);
    // Where approval requests go is oversight: a key's new address always waits.
    let mut email_change = None;
    if let Some(e) = oversight_email.filter(|e| mailbox.oversight_email.as_deref() != Some(*e)) {
        email_change = setting(ctx, &mut batch, &mb, false, ChangeKind::OversightEmail, e, mailboxes::set_oversight_email_stmt(&ctx.db, &acct, &mb, Some(e), now)?)?;
        if email_change.is_none() {
            mailbox.oversight_email = Some(e.to_string());
        }
    }
    let mut scan_change = None;
    if let Some(x) = scan.filter(|x| *x != mailbox.scan) {
        scan_change = setting(ctx, &mut batch, &mb, x.strictness() > mailbox.scan.strictness(), ChangeKind::ScanPolicy, x.as_str(), mailboxes::set_scan_stmt(&ctx.db, &acct, &mb, x, now)?)?;
        if scan_change.is_none() {
            mailbox.scan = x;
        }
    }
    let mut disclosure_change = None;
    if let Some(d) = ai_disclosure.filter(|d| *d != mailbox.ai_disclosure) {
        disclosure_change = setting(ctx, &mut batch, &mb, d.strictness() > mailbox.ai_disclosure.strictness(), ChangeKind::AiDisclosure, d.as_str(), mailboxes::set_ai_disclosure_stmt(&ctx.db, &acct, &mb, d, now)?)?;
        if disclosure_change.is_none() {
            mailbox.ai_disclosure = d;
        }
    }
    // The allow-list bypass: off tightens; on lets gated mail go unheld.
    let mut bypass_change = None;
    if let Some(on) = allowlist_bypass.filter(|on| *on != (mailbox.allowlist_bypass == 1)) {
        bypass_change = setting(ctx, &mut batch, &mb, !on, ChangeKind::AllowlistBypass, "true", mailboxes::set_allowlist_bypass_stmt(&ctx.db, &acct, &mb, on, now)?)?;
        if bypass_change.is_none() {
            mailbox.allowlist_bypass = i64::from(on);
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

/// One mailbox setting: `set` joins the batch when it `tightens` oversight or a human asks;
/// otherwise the change a human must decide joins it instead, and is returned.
fn setting(ctx: &Ctx, batch: &mut Vec<D1PreparedStatement>, mailbox_id: &str, tightens: bool, kind: ChangeKind, value: &str, set: D1PreparedStatement) -> ApiResult<Option<ChangeRow>> {
    if tightens || ctx.principal().actor().is_human() {
        batch.push(set);
        return Ok(None);
    }
    let (c, statements) = changes::open(ctx, kind, Some(mailbox_id), mailbox_id, Some(value))?;
    batch.extend(statements);
    Ok(Some(c))
}
