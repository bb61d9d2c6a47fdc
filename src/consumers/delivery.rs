//! The delivery queue's consumer: claim the message in D1, hand it to the provider, record the
//! outcome. Decisions (which provider, what the answer means, how long to back off) come from
//! `domain::delivery`; this file only does the I/O around them. Jobs are written by
//! `app::queues`.

use crate::store::Db;
use std::time::Duration;

use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{AbortController, Env, Fetch, Headers, Method, MessageBatch, MessageExt, QueueRetryOptionsBuilder, Request, RequestInit};

use crate::app::queues::{self, parse_job, DeliveryJob};
use crate::app::{attachments, audit, domains, identity, payloads};
use crate::domain::edits;
use crate::domain::address::Recipient;
use crate::domain::delivery::{self, classify_response, OutboundEmail, ProviderOutcome, Provider};
use crate::domain::message::{MessageKind, MessageStatus};
use crate::platform::{self, Config};
use crate::store::{self, events, messages};

/// A claim this old on a provider that deduplicates may be taken over (the isolate died mid-call).

pub async fn consume(batch: MessageBatch<Value>, env: Env) {
    let queue = batch.queue();
    if !queue.contains("delivery") {
        // `entry` sends the events queues to `consumers::events`; never mistake another
        // queue's messages for deliveries.
        worker::console_warn!("queue {queue}: not a delivery queue; retrying later");
        batch.retry_all_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(3600).build());
        return;
    }
    let dead_letters = queue.ends_with("-dlq");
    let config = Config::from_env(&env);
    // One D1 handle for the batch: its meter says what the batch cost (logged below).
    let db = match store::db(&env) {
        Ok(db) => db,
        Err(e) => {
            worker::console_error!("delivery: no D1 binding: {e}");
            batch.retry_all_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(config.delivery_backoff_secs.max(1)).build());
            return;
        }
    };
    let mut handled = 0;
    for raw in batch.raw_iter() {
        let Some(job) = parse_job::<DeliveryJob>(&raw) else {
            worker::console_error!("delivery: dropping a malformed queue message");
            raw.ack();
            continue;
        };
        handled += 1;
        let result = if dead_letters { give_up(&env, &db, &job).await } else { deliver(&env, &db, &config, &job).await };
        if let Err(e) = result {
            // Storage trouble: let the queue try again (after max_retries it reaches the DLQ).
            worker::console_error!("delivery of {}: {e}", job.message_id);
            raw.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(config.delivery_backoff_secs.max(1)).build());
        } else {
            raw.ack();
        }
    }
    let cost = db.cost();
    worker::console_log!("delivery cost: messages={handled} d1={} queue={} wasm_memory_mib={}", cost.d1.count(), cost.queue.count(), platform::wasm_memory_mib());
}

async fn deliver(env: &Env, db: &store::Db, config: &Config, job: &DeliveryJob) -> worker::Result<()> {
    let now = platform::now_ms();
    // Round trip 1: claim the message and read it with its stored bodies.
    let provider_for = |live: bool| Provider::for_mode(config.provider, live);
    let with_mime = config.provider == Provider::Cloudflare;
    // A stale claim may be taken over where the message's provider deduplicates repeats.
    let reclaim = |live: bool| provider_for(live).deduplicates().then_some(now - config.reclaim_after_secs * 1000);
    let claim = messages::claim(db, &job.message_id, now, now + 1000, [reclaim(false), reclaim(true)], with_mime).await?;
    let Some(m) = claim.message else {
        worker::console_error!("delivery: no message {}", job.message_id);
        return Ok(());
    };
    let Some(attempt) = claim.attempt else {
        // Not claimed: scheduled for later (wait for it), or someone else has it, or it is done.
        if m.msg.status == MessageStatus::Scheduled {
            if let Some(at) = m.msg.send_at.filter(|at| *at > now + 1000) {
                return db.cost().queue.time(queues::enqueue_delivery(env, &m.msg.id, Some(at), now)).await;
            }
        }
        return Ok(());
    };
    let provider = provider_for(m.msg.is_live());
    let attempt = attempt as u32;
    let attempted = match call_provider(env, config, provider, &m, attempt, claim.outbound, claim.mime).await {
        Ok(a) => a,
        Err(e) => Attempted {
            outcome: ProviderOutcome::Retry {
                delay_secs: delivery::backoff_secs(attempt, config.delivery_backoff_secs),
                reason: format!("{} could not be reached: {e}", provider.as_str()),
            },
            timeline: vec![],
        },
    };
    let now = platform::now_ms();
    // Round trip 2: the outcome with its timeline rows (the identity, DKIM), event and audit entry.
    let mut batch = attempted.timeline.iter().map(|(kind, detail)| messages::timeline(db, &m.msg.id, now, kind, Some(detail))).collect::<worker::Result<Vec<_>>>()?;
    match attempted.outcome {
        ProviderOutcome::Sent { provider_message_id } => {
            let payload = payloads::sent(&m.msg, &m.mailbox_address, provider.as_str(), &provider_message_id, now);
            batch.extend([
                messages::mark_sent(db, &m.msg.id, provider.as_str(), &provider_message_id, now)?,
                messages::timeline(db, &m.msg.id, now, "attempt", Some(&format!("#{attempt} {}: accepted", provider.as_str())))?,
                messages::timeline(db, &m.msg.id, now, "sent", Some(&format!("{} id {provider_message_id}", provider.as_str())))?,
            ]);
            // Approval requests to oversight addresses are ours, not the user's: no events.
            if m.msg.kind == MessageKind::Message {
                batch.push(events::about_message(db, &m.msg, &payload)?);
            }
            batch.push(audit::pending(db, audit_facts(&m, "delivery.sent", "ok", Some(format!("{} id {provider_message_id}", provider.as_str()))))?);
            db.batch(batch).await?;
            if m.msg.kind == MessageKind::Message {
                db.cost().queue.time(queues::kick_events(env)).await;
            }
        }
        ProviderOutcome::Retry { delay_secs, reason } => {
            batch.extend([
                messages::release_for_retry(db, &m.msg.id, &reason, now)?,
                messages::timeline(db, &m.msg.id, now, "attempt", Some(&format!("#{attempt}: {reason}")))?,
            ]);
            db.batch(batch).await?;
            if attempt >= config.delivery_max_attempts {
                let reason = format!("gave up after {attempt} attempts; last: {reason}");
                db.cost().queue.time(queues::dead_letter_delivery(env, &m.msg.id, reason)).await?;
            } else {
                // The queue message in hand is acked by the caller; the retry is a fresh,
                // delayed one.
                db.cost().queue.time(queues::retry_delivery(env, &m.msg.id, delay_secs)).await?;
            }
        }
        ProviderOutcome::Fail { reason } => {
            batch.push(messages::timeline(db, &m.msg.id, now, "attempt", Some(&format!("#{attempt}: {reason}")))?);
            db.batch(batch).await?;
            fail(env, db, &m, &reason, now).await?;
        }
    }
    Ok(())
}

/// The dead-letter queue's consumer: whatever lands there has failed for good.
async fn give_up(env: &Env, db: &store::Db, job: &DeliveryJob) -> worker::Result<()> {
    let Some(m) = messages::get(db, &job.message_id).await? else { return Ok(()) };
    let reason = job.reason.clone().unwrap_or_else(|| "delivery retries exhausted".into());
    fail(env, db, &m, &reason, platform::now_ms()).await
}

async fn fail(env: &Env, db: &Db, m: &messages::MessageWithMailbox, reason: &str, now: i64) -> worker::Result<()> {
    if messages::mark_failed(db, &m.msg.id, reason, now).await? {
        failed_effects(env, db, m, reason, now).await?;
    }
    Ok(())
}

/// Why an interrupted delivery to a provider without idempotency keys is not tried again.
pub const INTERRUPTED: &str = "delivery_interrupted: the worker stopped during the provider call, so whether the provider accepted it is unknown; it is not tried again, so it is never sent twice";

/// A delivery claimed before `claimed_before` and never finished (the worker died mid-attempt):
/// where the provider deduplicates repeats, enqueued again (the consumer reclaims it and the
/// provider drops a repeat); otherwise failed with `INTERRUPTED` (at most once). For the sweep.
pub async fn settle_interrupted(env: &Env, db: &Db, config: &Config, m: &messages::MessageWithMailbox, claimed_before: i64, now: i64) -> worker::Result<()> {
    if Provider::for_mode(config.provider, m.msg.is_live()).deduplicates() {
        return queues::enqueue_delivery(env, &m.msg.id, None, now).await;
    }
    if messages::fail_stale_sending(db, &m.msg.id, claimed_before, INTERRUPTED, now).await? {
        failed_effects(env, db, m, INTERRUPTED, now).await?;
    }
    Ok(())
}

/// The timeline entry, `email.failed` and audit entry of a message just marked failed.
async fn failed_effects(env: &Env, db: &Db, m: &messages::MessageWithMailbox, reason: &str, now: i64) -> worker::Result<()> {
    let payload = payloads::failed(&m.msg, &m.mailbox_address, reason, now);
    let mut batch = vec![messages::timeline(db, &m.msg.id, now, "failed", Some(reason))?];
    if m.msg.kind == MessageKind::Message {
        batch.push(events::about_message(db, &m.msg, &payload)?);
    }
    batch.push(audit::pending(db, audit_facts(m, "delivery.failed", "failed", Some(reason.to_string())))?);
    db.batch(batch).await?;
    db.cost().queue.time(queues::kick_events(env)).await;
    Ok(())
}

/// Delivery outcomes go into the account's audit trail like API calls do.
fn audit_facts(m: &messages::MessageWithMailbox, action: &str, outcome: &str, detail: Option<String>) -> audit::Facts {
    audit::about_message(&m.msg, "system:delivery", action, outcome, detail)
}

/// What one call to the provider came to, and the timeline rows it leaves (`(kind, detail)`),
/// stored with the outcome.
struct Attempted {
    outcome: ProviderOutcome,
    timeline: Vec<(&'static str, String)>,
}

async fn call_provider(env: &Env, config: &Config, provider: Provider, m: &messages::MessageWithMailbox, attempt: u32, outbound: Option<String>, mime: Option<String>) -> worker::Result<Attempted> {
    let message_id = m.msg.id.as_str();
    let json = outbound.ok_or("the stored message body is missing")?;
    let mut email: OutboundEmail = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    drop(json);
    let mut mime = mime;
    if email.has_stored() && provider != Provider::Sandbox {
        // A large message: its attachments come back from the bucket (checked by hash), and
        // its MIME, when the provider takes MIME, is built now.
        attachments::hydrate(env, &mut email).await?;
        if provider == Provider::Cloudflare && mime.as_deref().is_none_or(str::is_empty) {
            let v = edits::to_send(&email).map_err(|e| e.to_string())?;
            let bytes = crate::domain::mime::build_at_most(&v, message_id, platform::now_ms(), usize::MAX).map_err(|e| e.to_string())?;
            mime = Some(String::from_utf8(bytes).map_err(|e| e.to_string())?);
        }
    }
    // Every message leaves with its signed identity; the sandbox records it like the rest.
    let jws = identity::sign_for(env, m, &email, platform::now_ms()).await?;
    let mut timeline = vec![("identity", jws.clone())];
    email.headers.push((identity::HEADER.into(), jws.clone()));
    let outcome = match provider {
        Provider::Sandbox => ProviderOutcome::Sent { provider_message_id: format!("sandbox_{message_id}") },
        Provider::Cloudflare => {
            let stored = mime.ok_or("the stored MIME is missing")?;
            let (outcome, dkim) = send_with_binding(env, &m.msg.account_id, &email, stored, &jws).await?;
            timeline.extend(dkim.map(|d| ("dkim", d)));
            outcome
        }
        Provider::Postmark | Provider::Resend => {
            let request = if provider == Provider::Postmark {
                let token = platform::secret(env, "POSTMARK_SERVER_TOKEN").ok_or("POSTMARK_SERVER_TOKEN is not set")?;
                delivery::postmark_request(&config.postmark_base_url, &token, &email)
            } else {
                let key = platform::secret(env, "RESEND_API_KEY").ok_or("RESEND_API_KEY is not set")?;
                delivery::resend_request(&config.resend_base_url, &key, &email)
            };
            let headers = Headers::new();
            for (k, v) in &request.headers {
                headers.set(k, v)?;
            }
            let controller = AbortController::default();
            let signal = controller.signal();
            let timeout_secs = config.provider_timeout_secs;
            worker::wasm_bindgen_futures::spawn_local(async move {
                worker::Delay::from(Duration::from_secs(u64::from(timeout_secs))).await;
                controller.abort();
            });
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_headers(headers).with_body(Some(JsValue::from_str(&request.body)));
            let req = Request::new_with_init(&request.url, &init)?;
            let sent = Fetch::Request(req).send_with_signal(&signal).await;
            match sent {
                Ok(mut resp) => {
                    let status = resp.status_code();
                    let retry_after = resp.headers().get("Retry-After").ok().flatten();
                    let body = resp.text().await.unwrap_or_default();
                    classify_response(provider, status, retry_after.as_deref(), &body, attempt, config.delivery_backoff_secs)
                }
                Err(e) => delivery::unanswered(provider, attempt, config.delivery_backoff_secs, &e.to_string()),
            }
        }
    };
    Ok(Attempted { outcome, timeline })
}

/// Cloudflare Email Service: the stored MIME through the `EMAIL` binding, one envelope per
/// recipient. Also returns the DKIM outcome for the timeline.
async fn send_with_binding(env: &Env, account_id: &str, email: &OutboundEmail, stored: String, jws: &str) -> worker::Result<(ProviderOutcome, Option<String>)> {
    // The identity header goes on top of the stored message (a JWS is one line, under 998 octets).
    let mime = format!("{}: {jws}\r\n{stored}", identity::HEADER);
    let sender = Recipient::parse(&email.from).map_err(|e| e.0)?.address;
    // From a verified custom domain, DKIM-signed with its keys (identity header included).
    let db = store::db(env)?;
    let (mime, dkim) = domains::dkim_sign(env, &db, account_id, sender.domain(), mime, platform::now_ms()).await;
    let sender = sender.to_string();
    let binding = env.send_email("EMAIL")?;
    let mut last_id = String::new();
    for rcpt in email.to.iter().chain(&email.cc).chain(&email.bcc) {
        let to = Recipient::parse(rcpt).map_err(|e| e.0)?.address.to_string();
        let msg = worker::EmailMessage::new(&sender, &to, &mime).map_err(|e| worker::Error::from(format!("{e:?}")))?;
        match binding.send(&msg).await {
            Ok(r) => last_id = r.message_id(),
            Err(e) => {
                return Ok((ProviderOutcome::Retry { delay_secs: 30, reason: format!("cloudflare email binding: {e:?}") }, dkim));
            }
        }
    }
    Ok((ProviderOutcome::Sent { provider_message_id: last_id }, dkim))
}
