//! The runtime's clock, randomness and deployment configuration, read in one place.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use worker::Env;

use crate::domain::time::{self, MAX_QUEUE_DELAY_SECS};
use crate::domain::{delivery::Provider, ids};

/// `CLOCK_OFFSET_SECONDS` as milliseconds; set by [`set_clock`] at every entry point.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);
/// `QUEUE_MAX_DELAY_SECONDS`; set by [`set_clock`] at every entry point.
static QUEUE_MAX_DELAY_SECS: AtomicU32 = AtomicU32::new(MAX_QUEUE_DELAY_SECS);

/// The worker's clock: the runtime's, moved by `CLOCK_OFFSET_SECONDS` (0 in a deployment).
pub fn now_ms() -> i64 {
    worker::Date::now().as_millis() as i64 + CLOCK_OFFSET_MS.load(Ordering::Relaxed)
}

/// Reads the two clock settings for tests of time-driven promises (docs/reliability.md), at the
/// first entry point an isolate runs (fetch, queue, scheduled, email, a Durable Object's
/// construction; later calls return at once):
/// - `CLOCK_OFFSET_SECONDS` (default 0) moves the worker's clock: a test restarts the worker a
///   day later without waiting a day. Timers already set (queue delays, alarms) keep real time,
///   which is how a lost alarm or queue message is simulated.
/// - `QUEUE_MAX_DELAY_SECONDS` (default and at most 43200, Cloudflare's 12 hours) shortens the
///   longest queue delay, so a `send_at` further out than one hop is reached in hops within a test.
///
/// Never set either in a deployment. The vars are the operator's, like every other setting; no
/// request can change them.
pub fn set_clock(env: &Env) {
    // Vars are fixed for an isolate's life: read them once, not on every request.
    if CLOCK_SET.swap(true, Ordering::Relaxed) {
        return;
    }
    let offset = num(env, "CLOCK_OFFSET_SECONDS", 0).clamp(-MAX_OFFSET_SECS, MAX_OFFSET_SECS);
    CLOCK_OFFSET_MS.store(offset * 1000, Ordering::Relaxed);
    let hop = num(env, "QUEUE_MAX_DELAY_SECONDS", i64::from(MAX_QUEUE_DELAY_SECS)).clamp(1, i64::from(MAX_QUEUE_DELAY_SECS));
    QUEUE_MAX_DELAY_SECS.store(hop as u32, Ordering::Relaxed);
}

/// Whether this isolate has read the clock settings.
static CLOCK_SET: AtomicBool = AtomicBool::new(false);

/// A year either way.
const MAX_OFFSET_SECS: i64 = 366 * 24 * 3600;

/// The queue delay for the next hop toward `due_ms` (0 when due), at most one hop long.
pub fn hop_delay_secs(due_ms: i64, now_ms: i64) -> u32 {
    time::hop_delay_secs(due_ms, now_ms, QUEUE_MAX_DELAY_SECS.load(Ordering::Relaxed))
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the runtime's CSPRNG is available");
    b
}

pub fn new_id(prefix: &str) -> String {
    ids::new_id(prefix, now_ms() as u64, random_bytes())
}

pub fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string()).filter(|s| !s.trim().is_empty())
}

/// Secrets first, then plain vars (local `.dev.vars` entries arrive as either).
pub fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|v| v.to_string()).or_else(|| var(env, name)).filter(|s| !s.trim().is_empty())
}

fn num(env: &Env, name: &str, default: i64) -> i64 {
    var(env, name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This deployment's own URL (`PUBLIC_BASE_URL`): every link we email or hand out starts
    /// with it, never with the request's `Host`.
    pub public_base_url: String,
    pub mail_domain: String,
    /// `OVERSIGHT_FROM`: the address approval requests come from (default `oversight@<MAIL_DOMAIN>`):
    /// the deployment's, never an agent's mailbox, so a human's reply reaches no agent.
    pub oversight_from: String,
    pub provider: Provider,
    pub postmark_base_url: String,
    pub resend_base_url: String,
    pub rate_limit_per_minute: i64,
    /// `TRUSTED_AUTHSERV_IDS`: the authserv-ids of the receivers in front of this deployment
    /// (comma-separated; default Email Routing's `mx.cloudflare.net`). Only their
    /// `Authentication-Results` header, on top, is a verdict.
    pub trusted_authserv_ids: Vec<String>,
    /// `ACCOUNT_RATE_LIMIT_PER_MINUTE`: requests a minute of all of an account's keys together
    /// (default 6000; 0 turns it off).
    pub account_rate_limit_per_minute: i64,
    /// `MAX_KEYS_PER_ACCOUNT`: active API keys an account may hold (default 100).
    pub max_keys_per_account: i64,
    pub delivery_max_attempts: u32,
    pub delivery_backoff_secs: u32,
    pub default_approval_ttl_secs: i64,
    /// `ALLOW_HTTP_LOOPBACK_WEBHOOKS = "true"`: webhook endpoints may be http://127.0.0.1 (local
    /// development and tests only; never set it in a deployment).
    pub allow_http_loopback_webhooks: bool,
    /// `WEBHOOK_RETRY_SCALE`: divides the webhook retry schedule (tests); 1 in production.
    pub webhook_retry_scale: u32,
    /// `SWEEP_STALE_AFTER_SECONDS` (default 600): how long a `queued` message may sit untouched
    /// before the hourly sweep enqueues it again (its queue message may be lost).
    pub sweep_stale_after_secs: i64,
    /// `RECLAIM_AFTER_SECONDS` (default 300): how long a delivery may stay claimed (`sending`)
    /// before it counts as interrupted (the worker died mid-attempt).
    pub reclaim_after_secs: i64,
    /// `PROVIDER_TIMEOUT_SECONDS` (default 15): how long one provider call may take.
    pub provider_timeout_secs: u32,
    /// `EVENT_RETENTION_DAYS` (default 30, at least 3, past the webhook retry schedule): how
    /// long fanned-out events and their webhook attempts are kept.
    pub event_retention_days: i64,
    /// `ATTACHMENT_RETENTION_DAYS` (default 30): how long a deleted mailbox's received
    /// attachments stay in the bucket.
    pub attachment_retention_days: i64,
}

impl Config {
    pub fn from_env(env: &Env) -> Config {
        Config {
            public_base_url: var(env, "PUBLIC_BASE_URL").unwrap_or_else(|| "http://127.0.0.1:8787".into()).trim_end_matches('/').to_string(),
            mail_domain: var(env, "MAIL_DOMAIN").unwrap_or_else(|| "multimail.test".into()),
            oversight_from: var(env, "OVERSIGHT_FROM")
                .unwrap_or_else(|| format!("oversight@{}", var(env, "MAIL_DOMAIN").unwrap_or_else(|| "multimail.test".into()))),
            provider: var(env, "EMAIL_PROVIDER").and_then(|p| Provider::parse(&p)).unwrap_or(Provider::Sandbox),
            postmark_base_url: var(env, "POSTMARK_BASE_URL").unwrap_or_else(|| "https://api.postmarkapp.com".into()),
            resend_base_url: var(env, "RESEND_BASE_URL").unwrap_or_else(|| "https://api.resend.com".into()),
            rate_limit_per_minute: num(env, "RATE_LIMIT_PER_MINUTE", 600),
            max_keys_per_account: num(env, "MAX_KEYS_PER_ACCOUNT", 100).max(1),
            account_rate_limit_per_minute: num(env, "ACCOUNT_RATE_LIMIT_PER_MINUTE", 6000),
            trusted_authserv_ids: var(env, "TRUSTED_AUTHSERV_IDS")
                .unwrap_or_else(|| "mx.cloudflare.net".into())
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            delivery_max_attempts: num(env, "DELIVERY_MAX_ATTEMPTS", 8).clamp(1, 50) as u32,
            delivery_backoff_secs: num(env, "DELIVERY_BACKOFF_SECONDS", 5).clamp(0, 3600) as u32,
            default_approval_ttl_secs: num(env, "DEFAULT_APPROVAL_TTL_SECONDS", 72 * 3600),
            allow_http_loopback_webhooks: var(env, "ALLOW_HTTP_LOOPBACK_WEBHOOKS").is_some_and(|v| v.trim() == "true"),
            webhook_retry_scale: num(env, "WEBHOOK_RETRY_SCALE", 1).clamp(1, 1_000_000) as u32,
            sweep_stale_after_secs: num(env, "SWEEP_STALE_AFTER_SECONDS", 600).clamp(1, 86_400),
            reclaim_after_secs: num(env, "RECLAIM_AFTER_SECONDS", 300).clamp(1, 86_400),
            provider_timeout_secs: num(env, "PROVIDER_TIMEOUT_SECONDS", 15).clamp(1, 120) as u32,
            event_retention_days: num(env, "EVENT_RETENTION_DAYS", 30).clamp(3, 3650),
            attachment_retention_days: num(env, "ATTACHMENT_RETENTION_DAYS", 30).clamp(0, 3650),
        }
    }
}

/// The isolate's WebAssembly linear memory, in MiB: it only grows, so it is the most this
/// isolate's Rust side has held at once (logged after large sends and deliveries).
pub fn wasm_memory_mib() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) * 65536 / (1024 * 1024)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}
