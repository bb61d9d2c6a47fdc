//! The kill switch: pausing a mailbox or a whole account stops its sending at once, for both
//! modes: new sends wait in `paused` (`app::outbound`), and queued or scheduled messages wait
//! there too when the delivery consumer reaches them (`store::messages::claim`), before any
//! provider call. Resuming is a human's decision (`domain::authority::may_resume`) and
//! releases what waited, oldest first. Our own requests to humans (approval emails) never wait.

use serde_json::{json, Value};

use crate::app::{audit, payloads, queues, Ctx};
use crate::domain::{authority, ids};
use crate::platform;
use crate::domain::time::to_rfc3339;
use crate::http::ApiResult;
use crate::store::mailboxes::{self, MailboxRow};
use crate::store::{accounts, events, messages};

/// What is paused or resumed.
pub enum Target<'a> {
    Account,
    Mailbox(&'a MailboxRow),
}

impl Target<'_> {
    fn describe(&self) -> String {
        match self {
            Target::Account => "the whole account".into(),
            Target::Mailbox(m) => format!("mailbox {}", m.address),
        }
    }
    fn mailbox_id(&self) -> Option<&str> {
        match self {
            Target::Account => None,
            Target::Mailbox(m) => Some(&m.id),
        }
    }
}

/// The `sending.paused` / `sending.resumed` events, one per mode (a pause holds both), to store
/// with the switch itself.
fn events_for(ctx: &Ctx, target: &Target<'_>, ty: &str, reason: Option<&str>, released: Option<usize>) -> ApiResult<Vec<worker::D1PreparedStatement>> {
    let p = ctx.principal();
    let mailbox = match target {
        Target::Account => None,
        Target::Mailbox(m) => Some((m.id.as_str(), m.address.as_str())),
    };
    let by = p.actor_name();
    let mut out = vec![];
    for livemode in [true, false] {
        let id = platform::new_id(ids::EVENT);
        let payload = payloads::sending(ty, &id, livemode, mailbox, &by, reason, released, ctx.now);
        out.push(events::insert(&ctx.db, &events::NewEvent {
            id: &id,
            account_id: &p.account_id,
            livemode,
            mailbox_id: target.mailbox_id(),
            message_id: None,
            payload: &payload,
            created_at: ctx.now,
        })?);
    }
    Ok(out)
}

/// Messages released and enqueued by one resume call; the hourly sweep enqueues any beyond.
const RELEASE_NOW: usize = 500;

/// Pauses sending (a tightening: any `oversight` key, or an operator who may decide).
pub async fn pause(ctx: &Ctx, target: &Target<'_>, reason: Option<&str>) -> ApiResult<Value> {
    let p = ctx.principal();
    authority::may_pause(p.actor())?;
    let stmt = match target {
        Target::Account => accounts::set_paused_stmt(&ctx.db, &p.account_id, Some(ctx.now))?,
        Target::Mailbox(m) => mailboxes::set_paused_stmt(&ctx.db, &p.account_id, &m.id, Some(ctx.now), ctx.now)?,
    };
    let mut batch = vec![stmt];
    batch.extend(events_for(ctx, target, "sending.paused", reason, None)?);
    ctx.db.batch(batch).await?;
    queues::kick_events(&ctx.env).await;
    let detail = format!("paused {}{}", target.describe(), reason.map(|r| format!(": {r}")).unwrap_or_default());
    audit::record_live(ctx, "pause", target.mailbox_id().map(str::to_string), detail).await;
    Ok(json!({
        "paused": true,
        "scope": if target.mailbox_id().is_some() { "mailbox" } else { "account" },
        "mailbox_id": target.mailbox_id(),
        "paused_at": to_rfc3339(ctx.now),
        "released": 0,
    }))
}

/// Resumes sending (a human's decision) and releases what waited, oldest first.
pub async fn resume(ctx: &Ctx, target: &Target<'_>) -> ApiResult<Value> {
    let p = ctx.principal();
    authority::may_resume(p.actor())?;
    let stmt = match target {
        Target::Account => accounts::set_paused_stmt(&ctx.db, &p.account_id, None)?,
        Target::Mailbox(m) => mailboxes::set_paused_stmt(&ctx.db, &p.account_id, &m.id, None, ctx.now)?,
    };
    ctx.db.exec(stmt).await?;
    let released = messages::release_paused(&ctx.db, &p.account_id, target.mailbox_id(), ctx.now, &p.actor_name()).await?;
    ctx.db.batch(events_for(ctx, target, "sending.resumed", None, Some(released.len()))?).await?;
    queues::kick_events(&ctx.env).await;
    for (id, send_at) in released.iter().take(RELEASE_NOW) {
        if let Err(e) = queues::enqueue_delivery(&ctx.env, id, *send_at, ctx.now).await {
            worker::console_error!("{}: enqueue of released {id} failed, the sweep will retry: {e}", ctx.request_id);
        }
    }
    audit::record_live(ctx, "resume", target.mailbox_id().map(str::to_string), format!("resumed {}; {} messages released", target.describe(), released.len())).await;
    Ok(json!({
        "paused": false,
        "scope": if target.mailbox_id().is_some() { "mailbox" } else { "account" },
        "mailbox_id": target.mailbox_id(),
        "paused_at": null,
        "released": released.len(),
    }))
}
