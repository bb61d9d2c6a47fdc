//! Recipient and sender rules (`domain::rules`): adding and removing them, for the API
//! (`routes::rules`) and the console alike. A block applies at once; an allow rule, and removing
//! a block, loosen oversight: a key's request opens a change a human decides (`app::changes`), a
//! human's applies at once.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::changes::{self, Asked};
use crate::app::{access, Ctx};
use crate::domain::changes::ChangeKind;
use crate::domain::rules::{normalize_pattern, RuleAction, RuleDirection};
use crate::domain::{ids, time::to_rfc3339};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::rules::{self as store_rules, RuleRow};

pub fn rule_json(r: &RuleRow) -> Value {
    json!({
        "id": r.id,
        "mailbox_id": r.mailbox_id,
        "direction": r.direction,
        "action": r.action,
        "pattern": r.pattern,
        "created_at": to_rfc3339(r.created_at),
        "created_by": r.created_by,
    })
}

/// The mailbox a rule is for (one this key may use), or the whole account (refused to a key
/// limited to some mailboxes).
async fn scope(ctx: &Ctx, mailbox: Option<&str>) -> ApiResult<Option<String>> {
    match mailbox {
        Some(m) => Ok(Some(access::visible_mailbox(ctx, m).await.map_err(|e| e.with_field("mailbox"))?.id)),
        None if ctx.principal().mailboxes.is_some() => {
            Err(ApiError::new(403, "mailbox_limited_key", "this key is limited to some mailboxes; name one in `mailbox` (account-wide rules are not its to change)"))
        }
        None => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRule {
    mailbox: Option<String>,
    action: String,
    pattern: String,
    direction: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn add_rule(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: AddRule = http::from_body(body)?;
    let action = RuleAction::parse(&input.action).ok_or_else(|| ApiError::invalid_field("action", "`action` is `allow` or `block`"))?;
    let direction = match input.direction.as_deref() {
        None => RuleDirection::Send,
        Some(d) => RuleDirection::parse(d).ok_or_else(|| ApiError::invalid_field("direction", "`direction` is `send` (recipients) or `receive` (senders)"))?,
    };
    let allow_kind = if direction == RuleDirection::Send { ChangeKind::AllowRule } else { ChangeKind::AllowReceiveRule };
    let pattern = normalize_pattern(&input.pattern).map_err(|m| ApiError::invalid_field("pattern", m))?;
    let mailbox_id = scope(ctx, input.mailbox.as_deref()).await?;
    if action == RuleAction::Allow {
        // Allowing loosens (with `allowlist_bypass`, such mail goes out unheld): a key asks.
        if let Asked::Waiting(c) = changes::ask(ctx, allow_kind, mailbox_id.as_deref(), &pattern, mailbox_id.as_deref()).await? {
            return Ok(Reply::accepted(json!({"rule": null, "change": changes::change_json(&c)})));
        }
    } else {
        let r = RuleRow {
            id: platform::new_id(ids::RULE),
            account_id: p.account_id.clone(),
            mailbox_id: mailbox_id.clone(),
            direction: direction.as_str().into(),
            action,
            pattern: pattern.clone(),
            created_at: ctx.now,
            created_by: p.actor_name(),
        };
        ctx.db.exec(store_rules::insert(&ctx.db, &r)?).await?;
    }
    let stored = store_rules::find(&ctx.db, &p.account_id, mailbox_id.as_deref(), direction, action, &pattern).await?.ok_or_else(ApiError::internal)?;
    Ok(Reply::created(json!({"rule": rule_json(&stored), "change": null})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveRule {
    id: String,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn remove_rule(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: RemoveRule = http::from_body(body)?;
    let rule = store_rules::get(&ctx.db, &p.account_id, &input.id)
        .await?
        .filter(|r| match (&r.mailbox_id, &p.mailboxes) {
            (_, None) => true,
            (Some(m), Some(_)) => p.can_use_mailbox(m),
            (None, Some(_)) => false,
        })
        .ok_or_else(|| ApiError::not_found("rule").with_field("id"))?;
    let mut v = rule_json(&rule);
    if rule.action == RuleAction::Block {
        // Lifting a block loosens: a key asks.
        if let Asked::Waiting(c) = changes::ask(ctx, ChangeKind::RemoveBlockRule, rule.mailbox_id.as_deref(), &rule.id, Some(&rule.pattern)).await? {
            v["removed"] = json!(false);
            v["change"] = changes::change_json(&c);
            return Ok(Reply::accepted(v));
        }
    } else {
        store_rules::delete(&ctx.db, &p.account_id, &rule.id).await?;
    }
    v["removed"] = json!(true);
    v["change"] = Value::Null;
    Ok(Reply::ok(v))
}
