//! The Worker's entry points: fetch (the API), queue (delivery, and events by queue name),
//! scheduled (housekeeping).

use serde_json::Value;
use worker::{event, Context, Env, MessageBatch, Request, Response, Result, ScheduleContext, ScheduledEvent};

use crate::domain::{idempotency, ratelimit};
use crate::{delivery, platform, routes, store};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    routes::handle(req, env, ctx).await
}

#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> Result<()> {
    // Errors are handled per message (ack or retry); returning Err here would fail the batch.
    if batch.queue().starts_with("multimail-events") {
        crate::events::consume(batch, env).await;
    } else {
        delivery::consume(batch, env).await;
    }
    Ok(())
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let now = platform::now_ms();
    let Ok(db) = store::db(&env) else { return };
    if let Err(e) = store::idempotency::prune(&db, now - idempotency::TTL_MS).await {
        worker::console_error!("cron: pruning idempotency records: {e}");
    }
    if let Err(e) = store::keys::prune_rate_windows(&db, ratelimit::window_start(now) - ratelimit::WINDOW_MS).await {
        worker::console_error!("cron: pruning rate windows: {e}");
    }
    match delivery::sweep(&env, now).await {
        Ok(n) if n > 0 => worker::console_log!("cron: re-enqueued {n} messages"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: delivery sweep: {e}"),
    }
    match crate::events::sweep(&env).await {
        Ok(n) if n > 0 => worker::console_log!("cron: events fan-out handled {n} events and stalled attempts"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: events sweep: {e}"),
    }
    if let Err(e) = crate::domains::recheck_due(&env, now).await {
        worker::console_error!("cron: re-verifying domains: {e}");
    }
}

/// Cloudflare Email Routing hands inbound mail here. Unknown recipients are rejected (the
/// sending server gets a bounce); everything else goes down the one inbound path.
#[event(email)]
async fn email(message: worker::ForwardableEmailMessage, env: Env, _ctx: Context) -> Result<()> {
    let to = message.to();
    let raw = match message.raw_bytes().await {
        Ok(r) => r,
        Err(e) => {
            worker::console_error!("inbound: could not read the message: {e}");
            message.set_reject("temporary failure reading the message");
            return Ok(());
        }
    };
    let parsed = match crate::domain::inbound::parse(&raw) {
        Ok(p) => p,
        Err(crate::domain::inbound::ParseError::TooLarge { limit }) => {
            message.set_reject(&format!("message larger than {limit} bytes"));
            return Ok(());
        }
        Err(_) => {
            message.set_reject("not an RFC 5322 message");
            return Ok(());
        }
    };
    match crate::inbound::ingest(&env, &parsed, Some(&raw), &[to.clone()], true, None).await {
        Ok(Some(_)) => {}
        Ok(None) => message.set_reject(&format!("no such mailbox: {to}")),
        Err(e) => {
            worker::console_error!("inbound for {to}: {e}");
            message.set_reject("temporary failure storing the message");
        }
    }
    Ok(())
}
