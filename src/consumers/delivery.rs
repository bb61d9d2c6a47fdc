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
use crate::app::{audit, domains, identity, payloads};
use crate::domain::address::Recipient;
use crate::domain::delivery::{self, classify_response, OutboundEmail, ProviderOutcome, Provider};
use crate::domain::message::{MessageKind, MessageStatus};
use crate::platform::{self, Config};
use crate::store::{self, events, messages::{self, Blob}};

const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);
/// A claim this old on a provider that deduplicates may be taken over (the isolate died mid-call).
const RECLAIM_AFTER_MS: i64 = 5 * 60 * 1000;

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
    for raw in batch.raw_iter() {
        let Some(job) = parse_job::<DeliveryJob>(&raw) else {
            worker::console_error!("delivery: dropping a malformed queue message");
            raw.ack();
            continue;
        };
        let result = if dead_letters { give_up(&env, &job).await } else { deliver(&env, &config, &job).await };
        if let Err(e) = result {
            // Storage trouble: let the queue try again (after max_retries it reaches the DLQ).
            worker::console_error!("delivery of {}: {e}", job.message_id);
            raw.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(config.delivery_backoff_secs.max(1)).build());
        } else {
            raw.ack();
        }
    }
}

async fn deliver(env: &Env, config: &Config, job: &DeliveryJob) -> worker::Result<()> {
    let db = store::db(env)?;
    let Some(m) = messages::get(&db, &job.message_id).await? else {
        worker::console_error!("delivery: no message {}", job.message_id);
        return Ok(());
    };
    let now = platform::now_ms();
    if m.msg.status == MessageStatus::Scheduled {
        if let Some(at) = m.msg.send_at.filter(|at| *at > now + 1000) {
            return queues::enqueue_delivery(env, &m.msg.id, Some(at), now).await;
        }
    }
    let provider = Provider::for_mode(config.provider, m.msg.is_live());
    let reclaim = provider.deduplicates().then_some(now - RECLAIM_AFTER_MS);
    let Some(attempt) = messages::claim(&db, &m.msg.id, now, reclaim).await? else {
        return Ok(()); // someone else has it, or it is already done or cancelled
    };
    let attempt = attempt as u32;
    let outcome = match call_provider(env, config, provider, &m).await {
        Ok(o) => o,
        Err(e) => ProviderOutcome::Retry {
            delay_secs: delivery::backoff_secs(attempt, config.delivery_backoff_secs),
            reason: format!("{} could not be reached: {e}", provider.as_str()),
        },
    };
    let now = platform::now_ms();
    match outcome {
        ProviderOutcome::Sent { provider_message_id } => {
            let payload = payloads::sent(&m.msg, &m.mailbox_address, provider.as_str(), &provider_message_id, now);
            let mut batch = vec![
                messages::mark_sent(&db, &m.msg.id, provider.as_str(), &provider_message_id, now)?,
                messages::timeline(&db, &m.msg.id, now, "attempt", Some(&format!("#{attempt} {}: accepted", provider.as_str())))?,
                messages::timeline(&db, &m.msg.id, now, "sent", Some(&format!("{} id {provider_message_id}", provider.as_str())))?,
            ];
            // Approval requests to oversight addresses are ours, not the user's: no events.
            if m.msg.kind == MessageKind::Message {
                batch.push(events::about_message(&db, &m.msg, &payload)?);
            }
            db.batch(batch).await?;
            queues::kick_events(env).await;
            audit_outcome(env, &m, "delivery.sent", "ok", Some(format!("{} id {provider_message_id}", provider.as_str()))).await;
        }
        ProviderOutcome::Retry { delay_secs, reason } => {
            db.batch(vec![
                messages::release_for_retry(&db, &m.msg.id, &reason, now)?,
                messages::timeline(&db, &m.msg.id, now, "attempt", Some(&format!("#{attempt}: {reason}")))?,
            ])
            .await?;
            if attempt >= config.delivery_max_attempts {
                let reason = format!("gave up after {attempt} attempts; last: {reason}");
                queues::dead_letter_delivery(env, &m.msg.id, reason).await?;
            } else {
                // The queue message in hand is acked by the caller; the retry is a fresh,
                // delayed one.
                queues::retry_delivery(env, &m.msg.id, delay_secs).await?;
            }
        }
        ProviderOutcome::Fail { reason } => {
            db.exec(messages::timeline(&db, &m.msg.id, now, "attempt", Some(&format!("#{attempt}: {reason}")))?).await?;
            fail(env, &db, &m, &reason, now).await?;
        }
    }
    Ok(())
}

/// The dead-letter queue's consumer: whatever lands there has failed for good.
async fn give_up(env: &Env, job: &DeliveryJob) -> worker::Result<()> {
    let db = store::db(env)?;
    let Some(m) = messages::get(&db, &job.message_id).await? else { return Ok(()) };
    let reason = job.reason.clone().unwrap_or_else(|| "delivery retries exhausted".into());
    fail(env, &db, &m, &reason, platform::now_ms()).await
}

async fn fail(env: &Env, db: &Db, m: &messages::MessageWithMailbox, reason: &str, now: i64) -> worker::Result<()> {
    if messages::mark_failed(db, &m.msg.id, reason, now).await? {
        let payload = payloads::failed(&m.msg, &m.mailbox_address, reason, now);
        let mut batch = vec![messages::timeline(db, &m.msg.id, now, "failed", Some(reason))?];
        if m.msg.kind == MessageKind::Message {
            batch.push(events::about_message(db, &m.msg, &payload)?);
        }
        db.batch(batch).await?;
        queues::kick_events(env).await;
        audit_outcome(env, m, "delivery.failed", "failed", Some(reason.to_string())).await;
    }
    Ok(())
}

/// Delivery outcomes go into the account's audit trail like API calls do.
async fn audit_outcome(env: &Env, m: &messages::MessageWithMailbox, action: &str, outcome: &str, detail: Option<String>) {
    audit::record(env, audit::about_message(&m.msg, "system:delivery", action, outcome, detail)).await;
}

async fn call_provider(env: &Env, config: &Config, provider: Provider, m: &messages::MessageWithMailbox) -> worker::Result<ProviderOutcome> {
    let db = store::db(env)?;
    let message_id = m.msg.id.as_str();
    let json = messages::blob(&db, message_id, Blob::Outbound).await?.ok_or("the stored message body is missing")?;
    let mut email: OutboundEmail = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    // Every message leaves with its signed identity; the sandbox records it like the rest.
    let jws = identity::sign_for(env, m, &email, platform::now_ms())?;
    db.exec(messages::timeline(&db, message_id, platform::now_ms(), "identity", Some(&jws))?).await?;
    email.headers.push((identity::HEADER.into(), jws.clone()));
    match provider {
        Provider::Sandbox => Ok(ProviderOutcome::Sent { provider_message_id: format!("sandbox_{message_id}") }),
        Provider::Cloudflare => send_with_binding(env, &db, &m.msg.account_id, &email, &jws).await,
        Provider::Postmark | Provider::Resend => {
            let request = if provider == Provider::Postmark {
                let token = platform::secret(env, "POSTMARK_SERVER_TOKEN").ok_or("POSTMARK_SERVER_TOKEN is not set")?;
                delivery::postmark_request(&config.postmark_base_url, &token, &email)
            } else {
                let key = platform::secret(env, "RESEND_API_KEY").ok_or("RESEND_API_KEY is not set")?;
                delivery::resend_request(&config.resend_base_url, &key, &email)
            };
            let attempt = m.msg.attempts as u32 + 1;
            let headers = Headers::new();
            for (k, v) in &request.headers {
                headers.set(k, v)?;
            }
            let controller = AbortController::default();
            let signal = controller.signal();
            worker::wasm_bindgen_futures::spawn_local(async move {
                worker::Delay::from(PROVIDER_TIMEOUT).await;
                controller.abort();
            });
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_headers(headers).with_body(Some(JsValue::from_str(&request.body)));
            let req = Request::new_with_init(&request.url, &init)?;
            let mut resp = Fetch::Request(req).send_with_signal(&signal).await?;
            let status = resp.status_code();
            let retry_after = resp.headers().get("Retry-After").ok().flatten();
            let body = resp.text().await.unwrap_or_default();
            Ok(classify_response(provider, status, retry_after.as_deref(), &body, attempt, config.delivery_backoff_secs))
        }
    }
}

/// Cloudflare Email Service: the stored MIME through the `EMAIL` binding, one envelope per
/// recipient.
async fn send_with_binding(env: &Env, db: &Db, account_id: &str, email: &OutboundEmail, jws: &str) -> worker::Result<ProviderOutcome> {
    let stored = messages::blob(db, &email.message_id, Blob::Mime).await?.ok_or("the stored MIME is missing")?;
    // The identity header goes on top of the stored message (a JWS is one line, under 998 octets).
    let mime = format!("{}: {jws}\r\n{stored}", identity::HEADER);
    let sender = Recipient::parse(&email.from).map_err(|e| e.0)?.address;
    // From a verified custom domain, DKIM-signed with its keys (identity header included).
    let (mime, dkim) = domains::dkim_sign(env, db, account_id, sender.domain(), mime, platform::now_ms()).await;
    if let Some(outcome) = dkim {
        db.exec(messages::timeline(db, &email.message_id, platform::now_ms(), "dkim", Some(&outcome))?).await?;
    }
    let sender = sender.to_string();
    let binding = env.send_email("EMAIL")?;
    let mut last_id = String::new();
    for rcpt in email.to.iter().chain(&email.cc).chain(&email.bcc) {
        let to = Recipient::parse(rcpt).map_err(|e| e.0)?.address.to_string();
        let msg = worker::EmailMessage::new(&sender, &to, &mime).map_err(|e| worker::Error::from(format!("{e:?}")))?;
        match binding.send(&msg).await {
            Ok(r) => last_id = r.message_id(),
            Err(e) => {
                return Ok(ProviderOutcome::Retry { delay_secs: 30, reason: format!("cloudflare email binding: {e:?}") });
            }
        }
    }
    Ok(ProviderOutcome::Sent { provider_message_id: last_id })
}
