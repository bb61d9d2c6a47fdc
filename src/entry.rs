//! The Worker's entry points: fetch (the API), queue (delivery, and events by queue name),
//! scheduled (the hourly housekeeping in `cron`), email (Email Routing's inbound mail).

use serde_json::Value;
use worker::{event, Context, Env, MessageBatch, Request, Response, Result, ScheduleContext, ScheduledEvent};

use crate::consumers;
use crate::domain::inbound::{self, ParseError};
use crate::{app, cron, platform, routes};

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    platform::set_clock(&env);
    routes::handle(req, env, ctx).await
}

#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> Result<()> {
    platform::set_clock(&env);
    // Errors are handled per message (ack or retry); returning Err here would fail the batch.
    if batch.queue().starts_with("multimail-events") {
        consumers::events::consume(batch, env).await;
    } else {
        consumers::delivery::consume(batch, env).await;
    }
    Ok(())
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    platform::set_clock(&env);
    cron::run(&env, &event.cron()).await;
}

/// Cloudflare Email Routing hands inbound mail here. Unknown recipients are rejected (the
/// sending server gets a bounce); everything else goes down the one inbound path.
#[event(email)]
async fn email(message: worker::ForwardableEmailMessage, env: Env, _ctx: Context) -> Result<()> {
    platform::set_clock(&env);
    let to = message.to();
    let raw = match message.raw_bytes().await {
        Ok(r) => r,
        Err(e) => {
            worker::console_error!("inbound: could not read the message: {e}");
            message.set_reject("temporary failure reading the message");
            return Ok(());
        }
    };
    let parsed = match inbound::parse(&raw) {
        Ok(p) => p,
        Err(ParseError::TooLarge { limit }) => {
            message.set_reject(&format!("message larger than {limit} bytes"));
            return Ok(());
        }
        Err(_) => {
            message.set_reject("not an RFC 5322 message");
            return Ok(());
        }
    };
    match app::inbound::ingest(&env, &parsed, Some(&raw), &[to.clone()], true, None, None).await {
        Ok(Some(_)) => {}
        Ok(None) => message.set_reject(&format!("no such mailbox: {to}")),
        Err(e) => {
            worker::console_error!("inbound for {to}: {e}");
            message.set_reject("temporary failure storing the message");
        }
    }
    Ok(())
}
