//! The cron (`[triggers] crons` in wrangler.toml). Every minute: seal the audit entries waiting
//! in `audit_pending` into their chains. Every hour (`HOURLY`): prune what expires (idempotency
//! records, rate windows, events past `EVENT_RETENTION_DAYS`, the attachments of mailboxes deleted
//! `ATTACHMENT_RETENTION_DAYS` ago), expire held
//! messages whose alarm was lost, re-enqueue deliveries and events whose queue message may be
//! lost, and re-verify custom domains. Each job logs its own failure and the rest still run.

use worker::Env;

use crate::app::{self, oversight};
use crate::consumers;
use crate::domain::approval::Command;
use crate::domain::{idempotency, ratelimit};
use crate::platform;
use crate::store::{self, messages};

/// Events (with their webhook attempts) deleted per hourly run at most: 24 × this a day, more
/// than a busy account's events a day, so the outbox shrinks back after a burst.
const PRUNE_EVENTS_PER_RUN: u32 = 5000;

/// The hourly schedule's cron expression (the other one is every minute).
pub const HOURLY: &str = "0 * * * *";

pub async fn run(env: &Env, cron: &str) {
    match app::audit::seal_all(env).await {
        Ok(n) if n > 0 => worker::console_log!("cron: sealed the audit entries of {n} chains"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: sealing audit entries: {e}"),
    }
    if cron == HOURLY {
        hourly(env).await;
    }
}

async fn hourly(env: &Env) {
    let now = platform::now_ms();
    let Ok(db) = store::db(env) else { return };
    if let Err(e) = store::idempotency::prune(&db, now - idempotency::TTL_MS).await {
        worker::console_error!("cron: pruning idempotency records: {e}");
    }
    if let Err(e) = store::provider_events::prune(&db, now - 7 * 24 * 3600 * 1000).await {
        worker::console_error!("cron: pruning provider event ids: {e}");
    }
    if let Err(e) = store::keys::prune_rate_windows(&db, ratelimit::window_start(now) - ratelimit::WINDOW_MS).await {
        worker::console_error!("cron: pruning rate windows: {e}");
    }
    let config = platform::Config::from_env(env);
    match store::events::prune(&db, now - config.event_retention_days * 24 * 3600 * 1000, PRUNE_EVENTS_PER_RUN).await {
        Ok(n) if n > 0 => worker::console_log!("cron: pruned {n} events past their retention"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: pruning events: {e}"),
    }
    match app::attachments::prune_deleted(env, &db, now, config.attachment_retention_days).await {
        Ok(n) if n > 0 => worker::console_log!("cron: deleted {n} attachments of deleted mailboxes"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: deleting attachments of deleted mailboxes: {e}"),
    }
    match sweep_deliveries(env, &config, now).await {
        Ok(n) if n > 0 => worker::console_log!("cron: re-enqueued {n} messages"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: delivery sweep: {e}"),
    }
    match consumers::events::sweep(env).await {
        Ok(n) if n > 0 => worker::console_log!("cron: events fan-out handled {n} events and stalled attempts"),
        Ok(_) => {}
        Err(e) => worker::console_error!("cron: events sweep: {e}"),
    }
    if let Err(e) = app::domains::recheck_due(env, now).await {
        worker::console_error!("cron: re-verifying domains: {e}");
    }
}

/// Expire held messages whose alarm was lost, and re-enqueue messages whose queue message may
/// be lost.
async fn sweep_deliveries(env: &Env, config: &platform::Config, now: i64) -> worker::Result<usize> {
    let db = store::db(env)?;
    for m in messages::overdue_pending(&db, now).await? {
        if let Err(e) = oversight::command(env, &m, Command::Expire { at: now }, true).await {
            worker::console_error!("sweep: expiring {}: {e}", m.id);
        }
    }
    let due = messages::needing_enqueue(&db, now - config.sweep_stale_after_secs * 1000, now + 60 * 60 * 1000).await?;
    for (id, send_at) in &due {
        app::queues::enqueue_delivery(env, id, *send_at, now).await?;
    }
    // Deliveries interrupted mid-attempt (the worker died): tried again where the provider
    // deduplicates, failed otherwise (`consumers::delivery::settle_interrupted`).
    let claimed_before = now - config.reclaim_after_secs * 1000;
    let stuck = messages::stale_sending(&db, claimed_before).await?;
    for m in &stuck {
        if let Err(e) = consumers::delivery::settle_interrupted(env, &db, config, m, claimed_before, now).await {
            worker::console_error!("sweep: settling the interrupted delivery of {}: {e}", m.msg.id);
        }
    }
    Ok(due.len() + stuck.len())
}
