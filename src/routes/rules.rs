//! Recipient and sender rules through the API: `list_rules` here, `add_rule` and `remove_rule`
//! in `app::rules` (shared with the console).

use serde_json::json;
use worker::Request;

use crate::app::{access, Ctx};
use crate::http::{self, ApiResult, Reply};
use crate::store::rules as store_rules;

pub use crate::app::rules::{add_rule, remove_rule, rule_json};

pub async fn list_rules(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["mailbox", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 50, 500)?;
    let mailbox = match q.get("mailbox") {
        Some(m) => Some(access::visible_mailbox(ctx, m).await.map_err(|e| e.with_field("mailbox"))?.id),
        None => None,
    };
    let rows = store_rules::list(&ctx.db, &p.account_id, mailbox.as_deref(), p.mailboxes.as_deref(), q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = super::page(rows, limit, |r| r.id.clone());
    Ok(Reply::ok(json!({"rules": rows.iter().map(rule_json).collect::<Vec<_>>(), "next_cursor": next})))
}

