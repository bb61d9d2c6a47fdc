//! The Worker's entry points: fetch (the API), queue (delivery), scheduled (housekeeping).

use serde_json::Value;
use worker::{event, Context, Env, MessageBatch, Request, Response, Result, ScheduleContext, ScheduledEvent};

use crate::domain::{idempotency, ratelimit};
use crate::{delivery, platform, routes, store};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    routes::handle(req, env).await
}

#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> Result<()> {
    // Errors are handled per message (ack or retry); returning Err here would fail the batch.
    delivery::consume(batch, env).await;
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
}
