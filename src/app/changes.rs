//! Changes that weaken oversight (other than a looser mode, `app::mode_changes`): a mailbox's
//! oversight address, removing a suppression, deleting a verified domain. What a key asks for
//! waits for a human (`domain::authority::weakening`); a human's applies at once. Either way the
//! live audit chain records it: mailboxes, suppressions and domains serve both modes.

use serde_json::{json, Value};
use worker::D1PreparedStatement;

use crate::app::{audit, Ctx};
use crate::domain::authority::{self, Weakening};
use crate::domain::changes::ChangeKind;
use crate::domain::oversight::ChangeStatus;
use crate::domain::disclosure::AiDisclosure;
use crate::domain::scan::ScanPolicy;
use crate::domain::time::to_rfc3339;
use crate::http::{ApiError, ApiResult};
use crate::platform;
use crate::store::changes::{self, ChangeRow};
use crate::domain::rules::{RuleAction, RuleDirection};
use crate::store::{domains, mailboxes, rules, suppressions};

pub const CHANGE_PREFIX: &str = "chg";

/// What asking for a weakening did.
pub enum Asked {
    /// A human asked: it is done.
    Applied,
    /// A key asked: this change waits for a human.
    Waiting(ChangeRow),
}

pub fn change_json(c: &ChangeRow) -> Value {
    json!({
        "id": c.id,
        "kind": c.kind,
        "mailbox_id": c.mailbox_id,
        "subject": c.subject,
        "value": c.value,
        "status": c.status,
        "description": c.kind.describe(&c.subject, c.value.as_deref()),
        "requested_by": c.requested_by,
        "created_at": to_rfc3339(c.created_at),
        "decided_at": c.decided_at.map(to_rfc3339),
        "decided_by": c.decided_by,
    })
}

/// Asks for a change that weakens oversight: applied at once when a human asks, else opened
/// for a human to decide (a newer request for the same thing replaces one still waiting).
pub async fn ask(ctx: &Ctx, kind: ChangeKind, mailbox_id: Option<&str>, subject: &str, value: Option<&str>) -> ApiResult<Asked> {
    let p = ctx.principal();
    match authority::weakening(p.actor())? {
        Weakening::ApplyNow => {
            apply(ctx, kind, subject, value).await?;
            record(ctx, "change.applied", kind, subject, value, None).await;
            Ok(Asked::Applied)
        }
        Weakening::WaitForHuman => {
            let (c, statements) = open(ctx, kind, mailbox_id, subject, value)?;
            ctx.db.batch(statements).await?;
            opened(ctx, &c).await;
            Ok(Asked::Waiting(c))
        }
    }
}

/// The change a key's request opens, and the statements that store it (a newer request for the
/// same thing supersedes one still waiting), for the caller's own write batch. Call `opened`
/// once the batch ran.
pub fn open(ctx: &Ctx, kind: ChangeKind, mailbox_id: Option<&str>, subject: &str, value: Option<&str>) -> ApiResult<(ChangeRow, Vec<D1PreparedStatement>)> {
    let p = ctx.principal();
            let c = ChangeRow {
                id: platform::new_id(CHANGE_PREFIX),
                account_id: p.account_id.clone(),
                kind,
                mailbox_id: mailbox_id.map(str::to_string),
                subject: subject.to_string(),
                value: value.map(str::to_string),
                status: ChangeStatus::Pending,
                requested_by: p.actor_name(),
                requested_livemode: i64::from(p.livemode),
                created_at: ctx.now,
                decided_at: None,
                decided_by: None,
            };
    let statements = vec![changes::supersede_pending(&ctx.db, &p.account_id, kind.as_str(), subject, ctx.now)?, changes::insert(&ctx.db, &c)?];
    Ok((c, statements))
}

/// Records an opened change in the live audit chain.
pub async fn opened(ctx: &Ctx, c: &ChangeRow) {
    record(ctx, "change.requested", c.kind, &c.subject, c.value.as_deref(), Some(&c.id)).await;
}

/// A human decides a waiting change (one winner); an approval applies it.
pub async fn decide(ctx: &Ctx, id: &str, approve: bool) -> ApiResult<ChangeRow> {
    let p = ctx.principal();
    authority::may_decide_change(p.actor())?;
    let existing = changes::get(&ctx.db, &p.account_id, id).await?;
    let visible = existing.as_ref().is_some_and(|c| c.mailbox_id.as_deref().is_none_or(|m| p.can_use_mailbox(m)));
    if !visible {
        return Err(ApiError::not_found("change").with_field("id"));
    }
    let status = if approve { ChangeStatus::Approved } else { ChangeStatus::Rejected };
    let Some(c) = changes::decide(&ctx.db, &p.account_id, id, status, ctx.now, &p.actor_name()).await? else {
        let c = existing.expect("visible");
        let now = changes::get(&ctx.db, &p.account_id, id).await?.unwrap_or(c);
        return Err(ApiError::conflict("already_decided", format!("{id} was already decided: {}", now.status))
            .with_extra(json!({"winner": {"id": now.id, "decision": now.status, "decided_by": now.decided_by, "decided_at": now.decided_at.map(to_rfc3339)}})));
    };
    if approve {
        apply(ctx, c.kind, &c.subject, c.value.as_deref()).await?;
    }
    record(ctx, if approve { "change.approved" } else { "change.rejected" }, c.kind, &c.subject, c.value.as_deref(), Some(&c.id)).await;
    Ok(c)
}

/// A decided change of either table (both have `chg_…` ids).
pub enum Decided {
    Mode(crate::store::mode_changes::ModeChangeRow),
    Other(ChangeRow),
}

/// Decides the change `id` names, whichever table holds it (the API's `decide_email` and the
/// console both come here).
pub async fn decide_any(ctx: &Ctx, id: &str, approve: bool) -> ApiResult<Decided> {
    let p = ctx.principal();
    if changes::get(&ctx.db, &p.account_id, id).await?.is_some() {
        return Ok(Decided::Other(decide(ctx, id, approve).await?));
    }
    Ok(Decided::Mode(crate::app::mode_changes::decide(ctx, id, approve, &p.actor_name()).await?))
}

async fn apply(ctx: &Ctx, kind: ChangeKind, subject: &str, value: Option<&str>) -> ApiResult<()> {
    let p = ctx.principal();
    match kind {
        ChangeKind::OversightEmail => mailboxes::set_oversight_email(&ctx.db, &p.account_id, subject, value, ctx.now).await?,
        ChangeKind::RemoveSuppression => {
            suppressions::remove(&ctx.db, &p.account_id, subject).await?;
        }
        ChangeKind::DeleteDomain => {
            domains::soft_delete(&ctx.db, &p.account_id, subject, ctx.now).await?;
        }
        ChangeKind::AllowRule | ChangeKind::AllowReceiveRule => {
            let direction = if kind == ChangeKind::AllowRule { RuleDirection::Send } else { RuleDirection::Receive };
            let r = rules::RuleRow {
                id: platform::new_id(crate::domain::ids::RULE),
                account_id: p.account_id.clone(),
                mailbox_id: value.filter(|v| !v.is_empty()).map(str::to_string),
                direction: direction.as_str().into(),
                action: RuleAction::Allow,
                pattern: subject.to_string(),
                created_at: ctx.now,
                created_by: p.actor_name(),
            };
            ctx.db.exec(rules::insert(&ctx.db, &r)?).await?;
        }
        ChangeKind::RemoveBlockRule => {
            rules::delete(&ctx.db, &p.account_id, subject).await?;
        }
        ChangeKind::AllowlistBypass => {
            ctx.db.exec(mailboxes::set_allowlist_bypass_stmt(&ctx.db, &p.account_id, subject, true, ctx.now)?).await?;
        }
        ChangeKind::AiDisclosure => {
            let d = value.and_then(AiDisclosure::parse).unwrap_or_default();
            ctx.db.exec(mailboxes::set_ai_disclosure_stmt(&ctx.db, &p.account_id, subject, d, ctx.now)?).await?;
        }
        ChangeKind::ScanPolicy => {
            let policy = value.and_then(ScanPolicy::parse).unwrap_or_default();
            ctx.db.exec(mailboxes::set_scan_stmt(&ctx.db, &p.account_id, subject, policy, ctx.now)?).await?;
        }
    }
    Ok(())
}

/// Every change is recorded in the live chain, whichever mode's credential asked or decided.
async fn record(ctx: &Ctx, action: &str, kind: ChangeKind, subject: &str, value: Option<&str>, change_id: Option<&str>) {
    let mailbox = matches!(kind, ChangeKind::OversightEmail | ChangeKind::ScanPolicy | ChangeKind::AiDisclosure | ChangeKind::AllowlistBypass).then(|| subject.to_string());
    let detail = format!("{}{}", change_id.map(|c| format!("{c}: ")).unwrap_or_default(), kind.describe(subject, value));
    audit::record_live(ctx, action, mailbox, detail).await;
}
